"""`prun describe NAME|ID`: everything about an app: its row, what it was started with, its pids and logs.

    prun describe api
    -> {"id": 1, "command": "describe", "args": {"target": "api"}}
    <- {"id": 1, "result": [{...the ls row..., "spec": {...}, "holder_pid": 4240, "logs": [OUT, ERR], ...}]}
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    apps = god.resolve(args.get("target", ""))
    rows = god.views(apps)
    for app, row in zip(apps, rows):
        row.update(spec=asdict(app.spec), holder_pid=app.holder_pid or None, logs=list(app.log_paths(god.home.logs)),
                   status_file=god.home.status_file(app.id),
                   created=app.created, failures=app.failures)
    return rows


@click.command("describe")
@click.argument("target")
def command(target: str) -> None:
    """Show everything about an app."""
    from prun.cluster.commands.table import memory, uptime

    for row in client().describe(target):
        spec = row["spec"]
        click.echo(f"{row['name']} (id {row['id']}, namespace {row['namespace']})")
        fields = [
            ("status", row["status"]), ("mode", row["mode"]), ("target", row["target"]),
            ("command", " ".join(spec.get("command") or []) or None), ("directory", spec["cwd"]),
            ("pid", row["pid"]), ("holder pid", row["holder_pid"]), ("listening on", ", ".join(row["listen"]) or None),
            ("workers", row["workers"]), ("instances", spec["instances"]), ("restarts", row["restarts"]),
            ("uptime", uptime(row["uptime"])), ("cpu", f"{row['cpu']:g}%"), ("memory", memory(row["memory"])),
            ("options", " ".join(spec.get("run_args") or []) or None), ("autorestart", spec["autorestart"]),
            ("env", " ".join(f"{k}={v}" for k, v in spec["env"].items()) or None),
            ("out log", row["logs"][0]), ("err log", row["logs"][1]), ("last error", row["error"] or None),
        ]
        for key, value in fields:
            if value is not None:
                click.echo(f"  {key:<13} {value}")
