"""prun's HTTP/1.1 server for ASGI and WSGI apps."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.options import WorkerOptions
from runtime.server import BootError, Server


def make_http_server(app: Any, interface: str, options: WorkerOptions, loop: asyncio.AbstractEventLoop) -> Server:
    raise BootError(f"the {interface} interface is not available yet")
