"""`prun ls`: the app table (id, name, namespace, mode, pid, uptime, restarts, status, cpu, mem, workers).

    prun ls [--json]
    -> {"id": 1, "command": "list"}
    <- {"id": 1, "result": [{"id": 0, "name": "api", "namespace": "default", "mode": "cluster", "pid": 4242,
                            "status": "online", "restarts": 0, "uptime": 61.2, "cpu": 0.4, "memory": 52428800,
                            "workers": 2, "listen": ["127.0.0.1:8000"], "target": "app:server", "error": ""}]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client, show

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    return god.views()


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="The rows as JSON.")
def command(as_json: bool) -> None:
    """List the apps."""
    show(client().list(), as_json)
