"""`prun delete NAME|ID|all|NAMESPACE|prun.toml`: stop apps and forget them.

    prun delete api
    -> {"id": 1, "command": "delete", "args": {"target": "api"}}
    <- {"id": 1, "result": [...the app table, without api...]}
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from prun.cluster.commands import target_command

if TYPE_CHECKING:
    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    await god.each([god.delete(app) for app in god.resolve(args.get("target", ""))])
    return god.views()


command = target_command("delete", "Stop apps and forget them.")
