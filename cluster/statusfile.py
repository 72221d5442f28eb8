"""The master's /status as a file, for `prun monit` under the daemon (no port, no RPC to the master).

Written atomically (a temporary file renamed over it) on the master's tick, when PRUN_STATUS_FILE names it.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_status(path: str, status: dict[str, Any]) -> None:
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w") as fh:
            json.dump(status, fh)
        os.replace(temporary, path)
    except OSError:
        pass  # a full disk must not stop the master


def read_status(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
