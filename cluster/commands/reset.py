"""`prun reset TARGET...`: set apps' restart counts (↺) back to 0, PM2's reset; nothing is restarted.

    prun reset api
    -> {"id": 1, "command": "reset", "args": {"target": "api"}}
    <- {"id": 1, "result": [...the app table, api's restarts at 0...]}

The count of unstable restarts toward --max-restarts starts again from 0 too, as PM2's does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prun.cluster.commands import target_command

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    for app in god.resolve(args.get("target", "")):
        app.restarts = app.unstable = 0
        god.persist(app)
    return god.views()


command = target_command("reset", "Set apps' restart counts back to 0.")
