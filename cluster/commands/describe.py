"""`prun describe NAME|ID`: everything about an app: its row, what it was started with, its pids and logs.

    prun describe api
    -> {"id": 1, "command": "describe", "args": {"target": "api"}}
    <- {"id": 1, "result": [{...the ls row..., "spec": {...}, "holder_pid": 4240, "logs": [OUT, ERR],
                             "worker_list": [{"slot": 0, "pid": 4243, "state": "ready", ...}], ...}]}

`worker_list` is what the master answers a Status request on its control channel (empty when it runs
none or does not answer within a second); a pid is shown only while its process runs.
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
    import asyncio

    from prun.cluster.daemon.home import alive

    apps = god.resolve(args.get("target", ""), empty_ok=True)
    rows = god.views(apps)
    statuses = await asyncio.gather(*(god.runner(app).status() for app in apps))  # over each control channel
    for app, row, status in zip(apps, rows, statuses):
        row.update(spec=asdict(app.spec), logs=list(app.log_paths(god.home.logs)),
                   holder_pid=app.holder_pid if alive(app.holder_pid, app.holder_started) else None,
                   log_writer_pid=app.log_pid if alive(app.log_pid, app.log_started) else None,
                   worker_list=(status or {}).get("workers", []), created=app.created, failures=app.failures)
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
            ("pid", row["pid"]), ("holder pid", row["holder_pid"]), ("log writer pid", row.get("log_writer_pid")), ("listening on", ", ".join(row["listen"]) or None),
            ("workers", row["workers"]), ("instances", spec["instances"]), ("restarts", row["restarts"]),
            ("uptime", uptime(row["uptime"])), ("cpu", f"{row['cpu']:g}%"), ("memory", memory(row["memory"])),
            ("options", " ".join(spec.get("run_args") or []) or None), ("autorestart", spec["autorestart"]),
            ("env", " ".join(f"{k}={v}" for k, v in spec["env"].items()) or None),
            ("out log", row["logs"][0]), ("err log", row["logs"][1]), ("last error", row["error"] or None),
        ]
        for key, value in fields:
            if value is not None:
                click.echo(f"  {key:<15} {value}")
