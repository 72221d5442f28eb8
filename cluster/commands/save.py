"""`prun save`: write the apps and how each was started to $PRUN_HOME/dump.json (0600), for `prun resurrect`.

    prun save
    -> {"id": 1, "command": "save"}
    <- {"id": 1, "result": {"path": "/home/me/.prun/dump.json", "apps": 3}}

The dump holds only what `start` was given (each app's spec: target, options, declared --env), never
the shell's environment.
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
    from prun.cluster.daemon.home import DUMP_VERSION, write_private

    apps = [dict(asdict(app.spec), stopped=app.status == "stopped") for app in sorted(god.apps.values(),
                                                                                       key=lambda a: a.id)]
    write_private(god.home.dump, {"version": DUMP_VERSION, "apps": apps})
    return {"path": god.home.dump, "apps": len(apps)}


@click.command("save")
def command() -> None:
    """Save the app list for prun resurrect."""
    result = client().save()
    click.echo(f"saved {result['apps']} apps to {result['path']}")
