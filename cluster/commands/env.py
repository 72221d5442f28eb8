"""`prun env NAME|ID`: the environment the app's master (and so its workers) was given.

    prun env api
    -> {"id": 1, "command": "env", "args": {"target": "api"}}
    <- {"id": 1, "result": {"PATH": "/usr/bin:/bin", "MODE": "prod", ...}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    app = god.resolve(args.get("target", ""))[0]
    return app.environment()


@click.command("env")
@click.argument("target")
def command(target: str) -> None:
    """Show an app's environment."""
    for key, value in sorted(client().env(target).items()):
        click.echo(f"{key}={value}")
