"""Servers for raw TCP apps: stream handlers `async def handle(reader, writer)` and asyncio Protocols."""

from __future__ import annotations

import asyncio
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

from prun.runtime.server import Server


class ProtocolServer(Server):
    """Serves an asyncio.Protocol factory with loop.create_server on each listener."""

    def __init__(self, app: Any, options: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(app, options, loop)
        self._transports: set[asyncio.BaseTransport] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def protocol(self) -> asyncio.Protocol:
        return _Tracked(self, self.app())

    def _opened(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        self.connections += 1
        self.requests += 1
        if self.requests == self.request_limit:
            self.on_limit()
        self._idle.clear()
        self.on_change()

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        self._transports.discard(transport)
        self.connections -= 1
        if not self.connections:
            self._idle.set()
        self.on_change()

    async def serve(self, listeners: list[socket.socket]) -> None:
        await self.start_accepting(listeners)

    async def drain(self, timeout: float) -> None:
        self.stop_accepting()
        await self.settle()  # TLS: every handshake that began is finished (or timed out)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            for transport in list(self._transports):
                if isinstance(transport, asyncio.WriteTransport):
                    transport.abort()


class _Tracked(asyncio.Protocol):
    """Wraps the app's protocol to count open connections."""

    def __init__(self, server: ProtocolServer, inner: asyncio.Protocol) -> None:
        self._server = server
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._server._opened(transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server._closed(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class StreamServer(ProtocolServer):
    """Serves `async def handle(reader, writer)` the way asyncio.start_server does.

    Unlike asyncio.start_server, the connection is closed when the handler returns or raises: a handler
    that ends without closing its writer would otherwise keep the connection, and its descriptor, open
    for ever (each client that hangs up would leak one).
    """

    def __init__(self, app: Callable[..., Any], options: Any, loop: asyncio.AbstractEventLoop) -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await app(reader, writer)
            except Exception:  # noqa: BLE001 - reported once, then the connection closes
                sys.stderr.write("prun: exception in the connection handler\n" + traceback.format_exc())
                sys.stderr.flush()
            finally:
                writer.close()

        def protocol() -> asyncio.Protocol:
            reader = asyncio.StreamReader(limit=2**16, loop=loop)
            return asyncio.StreamReaderProtocol(reader, handler, loop=loop)

        super().__init__(protocol, options, loop)
