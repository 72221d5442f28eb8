"""prun's HTTP/1.1 server for ASGI and WSGI apps (httptools + uvloop).

    server.py     listeners, connections, the once-a-second clock (Date header, keep-alive sweep), drain
    protocol.py   one connection: parsing, pipelining, flow control, limits      (hot path)
    exchange.py   one request/response: body buffering, response framing        (hot path)
    asgi.py       ASGI receive/send and running the app without a Task per request (hot path)
    wsgi.py       WSGI apps on a bounded thread pool, with a streamed wsgi.input
    lifespan.py   ASGI lifespan startup/shutdown and the shared state
    proxy.py      --proxy-headers: trusted peers and the X-Forwarded-* they report
    logs.py       app errors (stderr) and the access log (stdout)
    settings.py   the leaf: settings built once from WorkerOptions, and the state connections share

Imports run one way, from server down to settings (tests/test_imports.py checks there is no cycle).
"""

from __future__ import annotations

import asyncio
from typing import Any

from prun.runtime.options import WorkerOptions
from prun.runtime.server import Server


def make_http_server(app: Any, interface: str, options: WorkerOptions, loop: asyncio.AbstractEventLoop) -> Server:
    """The Server for an ASGI (`interface="asgi"`) or WSGI (`"wsgi"`) app."""
    from prun.runtime.http.server import HttpServer

    return HttpServer(app, interface, options, loop)
