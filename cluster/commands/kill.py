"""`prun kill`: stop every app gracefully, then the daemon.

    prun kill
    -> {"id": 1, "command": "kill"}
    <- {"id": 1, "result": {"stopped": 3}}      (sent once every app has stopped; the daemon then exits)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    count = len(god.apps)
    await god.kill()
    return {"stopped": count}


@click.command("kill")
def command() -> None:
    """Stop every app, then the daemon."""
    c = client()
    if not c.running():
        click.echo(f"no prun daemon runs on {c.home.path}")
        return
    c.kill()
    click.echo("daemon and apps stopped")
