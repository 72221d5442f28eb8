"""`prun scale NAME|ID N|+N|-N`: set an app's number of workers (TTIN/TTOU to its master, one at a time).

    prun scale api +2
    -> {"id": 1, "command": "scale", "args": {"target": "api", "count": "+2"}}
    <- {"id": 1, "result": [...the app table...]}

The new count is stored: a restart or a resurrect keeps it.
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
    await god.each([god.scale(app, count) for app in god.resolve(args.get("target", ""))])
    return god.views()


@click.command("scale", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("count")
def command(target: str, count: str) -> None:
    """Scale an app to N workers, or by +N / -N."""
    show_after(lambda: client().scale(target, count))
