"""The HTTP server of a worker: listeners, open connections, the once-a-second clock, drain."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prun.runtime.http.lifespan import Lifespan
from prun.runtime.http.protocol import HttpProtocol
from prun.runtime.http.settings import Settings, Shared
from prun.runtime.options import WorkerOptions
from prun.runtime.server import BootError, Server

TICK_SECONDS = 1.0


class HttpServer(Server):
    """Serves an ASGI or WSGI app over HTTP/1.1 on every listener.

    Its connections see only the Settings and the Shared state (settings.py), never the server itself.
    The counters the shim reads and the hooks it sets (requests, connections, on_limit, on_change) live
    in Shared; the properties below forward them.
    """

    def __init__(self, app: Any, interface: str, options: WorkerOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings = Settings(options)
        self.shared = shared = Shared(app, settings, loop.time())
        super().__init__(app, options, loop)
        if interface == "wsgi":
            from prun.runtime.http.wsgi import WsgiExchange

            shared.exchange_cls = WsgiExchange
            if settings.http2:
                from prun.runtime.http.h2exchange import WsgiH2Exchange

                shared.h2_exchange_cls = WsgiH2Exchange
                shared.h2_protocol_cls = h2_protocol_class(settings)
            self.lifespan = Lifespan(app, "off", loop)
            self.executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
                max_workers=max(1, options.threads), thread_name_prefix="prun-wsgi"
            )
            shared.executor = self.executor
        elif interface == "asgi":
            from prun.runtime.http.asgi import AsgiExchange, release_host, take_host

            shared.exchange_cls = AsgiExchange
            if settings.http2:
                from prun.runtime.http.h2exchange import AsgiH2Exchange

                shared.h2_exchange_cls = AsgiH2Exchange
                shared.h2_protocol_cls = h2_protocol_class(settings)
            shared.make_host = take_host  # one per connection at a time, parked between them (asgi.py)
            shared.release_host = release_host
            self.lifespan = Lifespan(app, options.lifespan, loop)
            self.executor = None
        else:
            raise BootError(f"the HTTP server serves asgi or wsgi apps, not {interface!r}")
        self.interface = interface
        shared.state = self.state = self.lifespan.state
        shared.on_empty = self._emptied
        self._all_closed: asyncio.Future[None] | None = None
        self._ticker: asyncio.TimerHandle | None = None

    # -- what the shim reads and sets, kept in Shared -------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self.shared.protocols)

    @connections.setter
    def connections(self, value: int) -> None:
        pass  # counted from the open connections themselves

    @property
    def requests(self) -> int:
        return self.shared.requests

    @requests.setter
    def requests(self, value: int) -> None:
        self.shared.requests = value

    @property
    def request_limit(self) -> int:
        return self.shared.request_limit

    @request_limit.setter
    def request_limit(self, value: int) -> None:
        self.shared.request_limit = value

    @property
    def on_limit(self) -> Callable[[], None]:
        return self.shared.on_limit

    @on_limit.setter
    def on_limit(self, value: Callable[[], None]) -> None:
        self.shared.on_limit = value

    @property
    def on_change(self) -> Callable[[], None]:
        return self.shared.on_change

    @on_change.setter
    def on_change(self, value: Callable[[], None]) -> None:
        self.shared.on_change = value

    @property
    def draining(self) -> bool:
        return self.shared.draining

    @property
    def protocols(self) -> set[HttpProtocol]:
        return self.shared.protocols

    # -- the clock: Date header cache and keep-alive sweep ------------------------------------------

    def _tick(self) -> None:
        """Once a second: refresh the Date header and close connections idle past keepalive_timeout."""
        now = self.loop.time()
        self.shared.tick(now)
        for proto in list(self.shared.protocols):
            proto.sweep(now)
        self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)

    # -- connections --------------------------------------------------------------------------------

    def protocol(self) -> HttpProtocol:
        if self.ssl is not None and self.shared.h2_exchange_cls is not None:
            return AlpnProtocol(self.settings, self.shared, self.loop)
        return HttpProtocol(self.settings, self.shared, self.loop)

    def _emptied(self) -> None:
        if self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    # -- the Server contract ------------------------------------------------------------------------

    async def startup(self) -> None:
        await self.lifespan.startup()

    async def serve(self, listeners: list[socket.socket]) -> None:
        await self.start_accepting(listeners)
        if self._ticker is None:
            self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)

    async def drain(self, timeout: float) -> None:
        loop = self.loop
        deadline = loop.time() + timeout
        self.shared.draining = True
        self.shared.going_away = self.going_away
        self.stop_accepting()
        await self.settle()  # TLS: every handshake that began is finished (or timed out), and counted
        self._all_closed = loop.create_future()
        if self.protocols:
            for proto in list(self.protocols):
                proto.drain()
            window = min(self.settings.drain_idle_window, max(0.0, deadline - loop.time()))
            await self._wait_closed(window)
            for proto in list(self.protocols):
                proto.close_if_idle()
            await self._wait_closed(deadline - loop.time())
            for proto in list(self.protocols):
                proto.transport.abort()
                if proto.host is not None:
                    proto.host.cancel()
        for task, _box in self.shared.spare_hosts:
            task.cancel()
        self.shared.spare_hosts.clear()
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


def h2_protocol_class(settings: Settings) -> Any:
    """The protocol serving an HTTP/2 connection: on the h2 library (h2conn.py), or on zttp (h2zttp.py)."""
    if settings.http2_engine == "zttp":
        from prun.runtime.http.h2zttp import ZttpProtocol

        return ZttpProtocol
    from prun.runtime.http.h2conn import H2Protocol

    return H2Protocol


class AlpnProtocol(HttpProtocol):
    """A TLS connection that may have chosen HTTP/2 by ALPN: served by h2conn.py if it did, else as HTTP/1.1."""

    __slots__ = ()

    def connection_made(self, transport: Any) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            conn = self.shared.h2_protocol_cls(self.settings, self.shared, self.loop)
            self.closed = self.closing = True
            self.parser = None
            transport.set_protocol(conn)
            conn.connection_made(transport)
            return
        super().connection_made(transport)
