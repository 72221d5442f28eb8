"""`prun update`: replace the daemon by a new one (after an upgrade); the apps keep serving, and are adopted.

    prun update
    -> {"id": 1, "command": "update"}
    <- {"id": 1, "result": {"leaving": 3}}      (the daemon then exits without touching its apps)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client, show

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    god.leave_apps = True
    god.stopping = True
    god.loop_exit()
    return {"leaving": len(god.apps)}


@click.command("update")
def command() -> None:
    """Restart the daemon itself; apps keep running."""
    c = client()
    result = c.update()
    click.echo(f"daemon {result['pid']} adopted {result['apps']} apps")
    show(c.list())
