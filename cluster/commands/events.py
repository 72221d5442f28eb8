"""`prun events [--json]`: print the daemon's events as they happen (bus.py lists them).

    prun events
    -> {"id": 1, "command": "subscribe"}
    <- {"id": 1, "result": "subscribed"}
    <- {"event": "reload_started", "time": 1764623000.1, "app": "api", "id": 0, "status": "online"}
    <- {"event": "reload_finished", "time": 1764623001.9, "app": "api", "id": 0, "status": "online", "workers": 2}
    ...                                                            (one line per event, until the client leaves)
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    from prun.cluster.daemon.rpc import STREAM

    god.bus.subscribe(writer)
    god.say(f"subscriber {len(god.bus.subscribers)} connected")
    return STREAM


def format_event(event: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    details = " ".join(f"{k}={v}" for k, v in event.items()
                       if k not in ("event", "time", "app", "id", "status") and v is not None)
    return f"{when} {event.get('app', '-')} {event['event']}" + (f" {details}" if details else "")


@click.command("events")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as sent by the daemon.")
def command(as_json: bool) -> None:
    """Print the daemon's events live (Ctrl-C to leave)."""
    for event in client().subscribe():
        click.echo(json.dumps(event) if as_json else format_event(event))
