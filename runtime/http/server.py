"""The HTTP server of a worker: listeners, open connections, the once-a-second clock, drain."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from typing import Any

from prun.runtime.http.lifespan import Lifespan
from prun.runtime.http.logs import AccessLog
from prun.runtime.http.protocol import HttpProtocol
from prun.runtime.http.proxy import TrustedProxies
from prun.runtime.options import WorkerOptions
from prun.runtime.server import BootError, Server

TICK_SECONDS = 1.0


class HttpServer(Server):
    """Serves an ASGI or WSGI app over HTTP/1.1 on every listener."""

    def __init__(self, app: Any, interface: str, options: WorkerOptions, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(app, options, loop)
        if interface == "wsgi":
            from prun.runtime.http.wsgi import WsgiExchange

            self.exchange_cls: Any = WsgiExchange
            self.make_host: Any = None
            self.lifespan = Lifespan(app, "off", loop)
            self.executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
                max_workers=max(1, options.threads), thread_name_prefix="prun-wsgi"
            )
        elif interface == "asgi":
            from prun.runtime.http.asgi import AsgiExchange, host_main

            self.exchange_cls = AsgiExchange
            self.make_host = lambda proto: loop.create_task(host_main(proto))  # one per connection (asgi.py)
            self.lifespan = Lifespan(app, options.lifespan, loop)
            self.executor = None
        else:
            raise BootError(f"the HTTP server serves asgi or wsgi apps, not {interface!r}")
        if options.access_log not in ("", "common", "json"):
            raise BootError(f"unknown access log format {options.access_log!r} (choose from common, json)")
        self.interface = interface
        self.state = self.lifespan.state
        self.access_log = AccessLog(options.access_log) if options.access_log else None
        self.root_path = options.root_path.rstrip("/")
        self.root_path_bytes = self.root_path.encode()
        self.proxy_headers = options.proxy_headers
        self.trusted = TrustedProxies(options.forwarded_allow_ips)
        self.limit_line = options.limit_request_line
        self.limit_header = options.limit_request_header_size
        self.limit_head = options.limit_request_line + options.limit_request_header_size + 4096
        self.limit_body = options.limit_request_body or 1 << 62  # 0: no limit
        self.limit_concurrency = options.limit_concurrency
        self.keepalive = options.keepalive_timeout
        self.active = 0  # app calls running
        self.draining = False
        self.protocols: set[HttpProtocol] = set()
        self._servers: list[Any] = []
        self._all_closed: asyncio.Future[None] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.clock = loop.time()
        self.date_server = b""
        self.date_lines = 1
        self.heads: dict[Any, tuple[bytes, int, bool]] = {}  # response heads built this second (exchange.py)
        self._update_date()

    # -- the clock: Date header cache and keep-alive sweep ------------------------------------------

    def _update_date(self) -> None:
        line = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"
        if self.options.server_header:
            line += b"server: prun\r\n"
        self.date_server = line
        self.date_lines = line.count(b"\n")
        self.heads.clear()

    def _tick(self) -> None:
        """Once a second: refresh the Date header and close connections idle past keepalive_timeout."""
        self.clock = now = self.loop.time()
        self._update_date()
        keepalive = self.keepalive
        for proto in list(self.protocols):
            proto.sweep(now, keepalive)
        self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)

    # -- connections --------------------------------------------------------------------------------

    def protocol(self) -> HttpProtocol:
        return HttpProtocol(self)

    def opened(self, proto: HttpProtocol) -> None:
        self.protocols.add(proto)
        self.connections += 1
        self.on_change()

    def closed(self, proto: HttpProtocol) -> None:
        self.protocols.discard(proto)
        self.connections -= 1
        self.on_change()
        if not self.protocols and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    # -- the Server contract ------------------------------------------------------------------------

    async def startup(self) -> None:
        await self.lifespan.startup()

    async def serve(self, listeners: list[socket.socket]) -> None:
        for sock in listeners:
            # create_server calls listen() again on the shared socket: keep the master's backlog.
            server = await self.loop.create_server(self.protocol, sock=sock, backlog=self.options.backlog)
            self._servers.append(server)
        if self._ticker is None:
            self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)

    async def drain(self, timeout: float) -> None:
        loop = self.loop
        deadline = loop.time() + timeout
        self.draining = True
        for srv in self._servers:
            srv.close()  # closes this worker's copy of the listener; the master and other workers keep it
        self._all_closed = loop.create_future()
        if self.protocols:
            for proto in list(self.protocols):
                proto.drain()
            window = min(self.options.drain_idle_window, max(0.0, deadline - loop.time()))
            await self._wait_closed(window)
            for proto in list(self.protocols):
                proto.close_if_idle()
            await self._wait_closed(deadline - loop.time())
            for proto in list(self.protocols):
                proto.transport.abort()
                if proto.host is not None:
                    proto.host.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        await self.lifespan.shutdown(max(1.0, deadline - loop.time()))

    async def _wait_closed(self, seconds: float) -> None:
        assert self._all_closed is not None
        if self.protocols and seconds > 0:
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), seconds)
            except asyncio.TimeoutError:
                pass
