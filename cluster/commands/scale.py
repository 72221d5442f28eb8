"""`prun scale NAME|ID N|+N|-N`: set an app's number of workers (TTIN/TTOU to its master, one at a time).

    prun scale api +2
    -> {"id": 1, "command": "scale", "args": {"target": "api", "count": "+2"}}
    <- {"id": 1, "result": [...the app table...]}

The new count is stored: a restart or a resurrect keeps it. A count that would leave an app with no
worker (0, or -N past its count) is refused (BAD_ARGUMENTS; the command exits 2) and nothing is scaled:
prun stop stops an app.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client, show_after

if TYPE_CHECKING:
    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    from prun.cluster.daemon import rpc

    count = str(args.get("count", ""))
    if not re.fullmatch(r"[+-]?\d+", count):
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, f"invalid count {count!r}: expected N, +N or -N")
    apps = god.resolve(args.get("target", ""))
    for app in apps:  # all or none: an app is never scaled to nothing (prun stop stops it)
        wanted = app.workers + int(count) if count.startswith(("+", "-")) else int(count)
        if wanted < 1:
            raise rpc.RpcError(rpc.BAD_ARGUMENTS, f"cannot scale {app.name} to {wanted} workers: an app keeps at "
                               f"least 1 (prun stop {app.name} stops it)")
    await god.each([god.scale(app, count) for app in apps])
    return god.views()


@click.command("scale", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("count")
def command(target: str, count: str) -> None:
    """Scale an app to N workers, or by +N / -N (at least 1: prun stop stops an app)."""
    from prun.cluster.client import ClientError
    from prun.cluster.errors import UsageError

    if not re.fullmatch(r"[+-]?\d+", count):
        raise UsageError(f"invalid count {count!r}: expected N, +N or -N")
    if int(count) == 0 and count[0].isdigit():
        raise UsageError(f"cannot scale {target} to 0 workers: an app keeps at least 1 (prun stop {target} stops it)")
    try:
        show_after(lambda: client().scale(target, count))
    except ClientError as exc:
        if exc.code_name == "BAD_ARGUMENTS":  # a count that would leave an app without workers
            raise UsageError(str(exc)) from None
        raise
