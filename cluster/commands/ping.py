"""`prun ping`: start the daemon if none runs, and show that it answers.

    prun ping
    -> {"id": 1, "command": "ping"}
    <- {"id": 1, "result": {"pong": true, "pid": 4242, "uptime": 12.5, "apps": 3, "home": "/home/me/.prun"}}
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    return {"pong": True, "pid": os.getpid(), "uptime": round(time.time() - god.started, 3),
            "apps": len(god.apps), "home": god.home.path}


@click.command("ping")
def command() -> None:
    """Start the daemon if needed and show that it answers."""
    result = client().ping()
    click.echo(f"pong: daemon {result['pid']} on {result['home']}, {result['apps']} apps")
