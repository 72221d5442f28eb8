"""`prun resurrect`: start every app of the dump `prun save` wrote, with the same options.

    prun resurrect
    -> {"id": 1, "command": "resurrect", "args": {"env": {...the caller's environment...}}}
    <- {"id": 1, "result": [...the app table...]}
    <- {"id": 1, "error": {"code": "BAD_ARGUMENTS", "message": "refusing the dump ...: not valid JSON ...; it is kept"}}

Every app of the dump is checked (schema.py) before any is started. Each app starts in the environment
it was saved with (the caller's, for an older dump without it). A dump that cannot be used falls back to
dump.json.bak, with a line in daemon.log. Apps already in the table are left alone; apps saved as stopped
come back stopped; an app that cannot start (saved errored, and still broken) is START_FAILED once every
other app was started: the command line prints the table, then that line, and exits 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import caller_environment, client, show_after

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    from prun.cluster.daemon import dump, rpc
    from prun.cluster.daemon.app import STOPPED, App
    from prun.cluster.errors import PrunError

    try:
        env = caller_environment(args.get("env") or {})
        saved, fallback = dump.read_or_backup(god.home.dump)
    except PrunError as exc:
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, str(exc)) from None
    if fallback:
        god.say(fallback)
    failures = []
    for each in saved:
        spec, environ = each.spec, each.environ if each.environ is not None else env  # as it was started
        if god.by_name(spec.name) is not None:
            continue
        if each.stopped:
            app = god.add(App(max(god.apps, default=-1) + 1, spec, environ, status=STOPPED))
            god.persist(app)
            continue
        try:
            await god.start(spec, environ)
        except rpc.RpcError as exc:
            failures.append(exc.message)
    if failures:
        raise rpc.RpcError(rpc.START_FAILED, "; ".join(failures))
    return god.views()


@click.command("resurrect")
def command() -> None:
    """Start the apps of the last prun save."""
    show_after(lambda: client().resurrect())
