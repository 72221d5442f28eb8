"""`prun reload NAME|ID|all|NAMESPACE|prun.toml`: a lossless rolling reload (the master's HUP); returns when done.

    prun reload api
    -> {"id": 1, "command": "reload", "args": {"target": "api"}}
    <- {"id": 1, "result": [...the app table...]}
    <- {"id": 1, "error": {"code": "START_FAILED", "message": "api: reload failed: ...; every worker keeps ..."}}

A stopped or errored app is started instead (as PM2 does).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from prun.cluster.commands import target_command

if TYPE_CHECKING:
    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    await asyncio.gather(*(god.reload(app) for app in god.resolve(args.get("target", ""))))
    return god.views()


command = target_command("reload", "Reload apps worker by worker, losing nothing.")
