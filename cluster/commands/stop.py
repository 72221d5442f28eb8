"""`prun stop NAME|ID|all|NAMESPACE|prun.toml`: drain and stop apps; their sockets close, they stay listed.

    prun stop api
    -> {"id": 1, "command": "stop", "args": {"target": "api"}}
    <- {"id": 1, "result": [...the app table...]}
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from prun.cluster.commands import target_command

if TYPE_CHECKING:
    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    await god.each([god.stop(app) for app in god.resolve(args.get("target", ""))])
    return god.views()


command = target_command("stop", "Drain and stop apps (their sockets close; they stay listed).")
