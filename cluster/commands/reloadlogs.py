"""`prun reloadLogs`: every app's log writer reopens its files (after an external logrotate moved them).

    -> {"id": 1, "command": "reloadLogs", "args": {"target": "all"}}
    <- {"id": 1, "result": [...the app table...]}

Sending USR1 to an app's master does the same for that app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    apps = god.resolve(args.get("target", "all"), empty_ok=True)
    for app in apps:
        god.runner(app).reopen_logs()
    return god.views(apps)


@click.command("reloadLogs")
@click.argument("target", required=False, default="all")
def command(target: str) -> None:
    """Reopen apps' log files (after logrotate moved them)."""
    rows = client().call("reloadLogs", target=target)
    click.echo(f"reopened the log files of {len(rows)} app{'s' if len(rows) != 1 else ''}")
