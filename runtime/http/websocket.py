"""ASGI WebSocket connections (RFC 6455) on the websockets library's sans-I/O ServerProtocol.

An HTTP connection whose request asks for `Upgrade: websocket` is handed here by protocol.py (only on
that path: plain requests never touch this module). The handshake is checked by ServerProtocol before
the app sees anything; a handshake it refuses (a bad key, an unsupported version: 400/426) is answered
with its response and logged once per reason. Then the transport is switched to a WebSocket object,
which takes the HttpProtocol's place among the server's connections: under --balance leastconn it
still counts as open, and the server's sweep (pings, closing timeout) and drain reach it the same way.

Bounds: a message larger than --ws-max-size closes with 1009 (checked by ServerProtocol as the frames
arrive); reading stops while --ws-max-queue messages wait for the app; the app's send waits while the
client does not read (pause_writing). A drain (reload) closes each WebSocket with 1012 after the drain
window, a stop with 1001; the connection leaves the server's set once both the socket closed and the
app's call returned, so the lifespan shutdown runs after both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from http import HTTPStatus
from typing import Any

from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from prun.runtime.http.exchange import status_line, write_error, write_stalled
from prun.runtime.http.logs import log_app_error, log_line
from prun.runtime.http.settings import Settings, Shared

CLOSE_TIMEOUT = 3.0  # seconds a client may take to answer our close frame before the socket is dropped
_ENCODING = "latin-1"

CONNECTING, OPEN, DENYING, CLOSED = range(4)  # the app's side: before accept, accepted, denial sent, done


class ClientDisconnected(OSError):
    """Raised by send() once the connection is gone (Starlette turns an OSError into WebSocketDisconnect)."""


def upgrade(proto: Any, scope: dict[str, Any], rest: bytes) -> None:
    """Take over `proto`'s connection for the WebSocket its request (`scope`, an http scope) asks for."""
    settings: Settings = proto.settings
    shared: Shared = proto.shared
    proto.closing = True
    if shared.draining:
        write_error(proto, 503)
        proto.close_gracefully()
        return
    extensions = [ServerPerMessageDeflateFactory()]
    server = ServerProtocol(extensions=extensions, max_size=settings.ws_max_size,
                            select_subprotocol=lambda _protocol, _offered: None)
    headers = Headers([(name.decode(_ENCODING), value.decode(_ENCODING)) for name, value in scope["headers"]])
    target = scope["raw_path"].decode(_ENCODING)
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode(_ENCODING)
    if headers.get("Sec-WebSocket-Version", "13").strip() != "13":
        why = "unsupported Sec-WebSocket-Version (13 is)"
        response = Response(426, "Upgrade Required", Headers([("Sec-WebSocket-Version", "13")]), b"")
        response._exception = ValueError(why)
    else:
        response = server.accept(Request(target, headers))
    if response.status_code != 101:
        why = str(response._exception) if response._exception is not None else response.reason_phrase
        if why not in shared.ws_refused:
            shared.ws_refused.add(why)
            log_line(f"refused a WebSocket upgrade from {proto.peer()}: {why} "
                     f"(answered {response.status_code}; logged once)")
        head = [status_line(response.status_code), shared.date_server]
        for name, value in response.headers.raw_items():
            if name.lower() not in ("content-length", "connection", "date"):
                head.append(f"{name}: {value}\r\n".encode(_ENCODING))
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(response.body))
        proto.transport.write(b"".join(head) + response.body)
        shared.counted()
        proto.close_gracefully()
        return
    offered = [p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")]
    ws_scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": scope["http_version"],
        "scheme": "wss" if scope["scheme"] == "https" else "ws",
        "server": scope["server"],
        "client": scope["client"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "raw_path": scope["raw_path"],
        "query_string": scope["query_string"],
        "headers": scope["headers"],
        "subprotocols": [p for p in offered if p],
        "extensions": {"websocket.http.response": {}},
        "state": scope["state"],
    }
    ws = WebSocket(proto, server, response, ws_scope)
    # The HttpProtocol leaves the connection: its host task ends, the WebSocket takes its place in the count.
    proto.closed = True
    if proto.host is not None:
        proto.host.cancel()
        proto.host = None
    shared.protocols.discard(proto)
    shared.protocols.add(ws)
    proto.transport.set_protocol(ws)
    if proto.read_paused:
        proto.read_paused = False
        proto.transport.resume_reading()
    ws.early = rest
    ws.start()


class WebSocket(asyncio.Protocol):
    """One WebSocket connection and the app's call serving it."""

    def __init__(self, proto: Any, server: ServerProtocol, response: Response, scope: dict[str, Any]) -> None:
        self.settings: Settings = proto.settings
        self.shared: Shared = proto.shared
        self.loop: asyncio.AbstractEventLoop = proto.loop
        self.transport: Any = proto.transport
        self.client = proto.client
        self.host: asyncio.Task[None] | None = None  # the app's task (the server's drain cancels it at the deadline)
        self.server = server
        self.response = response
        self.scope = scope
        self.state = CONNECTING
        self.connected_sent = False
        self.messages: deque[dict[str, Any]] = deque()
        self.fragments: list[bytes] = []
        self.fragment_text = False
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.read_paused = False
        self.write_paused = False
        self.closed = False  # the socket is gone
        self.app_running = False
        self.counted_out = False
        self.close_code = 1006
        self.close_reason = ""
        self.closing_since = 0.0  # our close frame went out (the client should answer it)
        self.pending_close = 0  # a drain asked to close before the app accepted
        self.last_seen = self.shared.clock
        self.ping_sent = 0.0
        self.write_left = 0  # the write buffer at the last sweep, and since when it has not changed
        self.write_since = 0.0
        self.deny_status = 0
        self.deny_headers: Any = ()
        self.deny_body: list[bytes] = []
        self.task: asyncio.Task[None] | None = None
        self.early = b""  # bytes that arrived before the app accepted (fed once it has)

    # -- the app ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.app_running = True
        self.shared.active += 1
        self.task = self.loop.create_task(self.run_app())
        self.host = self.task  # what the server's drain cancels at its deadline

    async def run_app(self) -> None:
        exc: BaseException | None = None
        try:
            await self.shared.app(self.scope, self.receive, self.send)
        except BaseException as error:  # noqa: BLE001 - reported below
            exc = error
        self.app_running = False
        self.shared.active -= 1
        if exc is not None and not (self.closed and isinstance(exc, (OSError, asyncio.CancelledError))):
            log_app_error(self.scope, exc)
        if self.state == CONNECTING:
            if not self.closed:
                # Closed (or failed) before accepting: the handshake is denied (403, or 500 on an error).
                self.write_status(403 if exc is None else 500)
        elif self.state == DENYING:
            if not self.closed:
                self.close_transport()  # a denial response the app did not finish
        elif self.state == OPEN:
            self.close(1011 if exc is not None else 1000, "")
        self.state = CLOSED
        self.count_out()

    async def receive(self) -> dict[str, Any]:
        if not self.connected_sent:
            self.connected_sent = True
            return {"type": "websocket.connect"}
        while True:
            if self.messages:
                message = self.messages.popleft()
                if self.read_paused and len(self.messages) < self.settings.ws_max_queue // 2 + 1:
                    self.read_paused = False
                    if not self.closed:
                        self.transport.resume_reading()
                return message
            if self.closed or self.server.state is State.CLOSED or self.state in (DENYING, CLOSED):
                return {"type": "websocket.disconnect", "code": self.close_code, "reason": self.close_reason}
            self.waiter = waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if self.state != OPEN or self.closed or self.server.state is not State.OPEN:
                raise ClientDisconnected("the WebSocket is closed")
            text = message.get("text")
            if text is not None:
                self.server.send_text(text.encode())
            else:
                self.server.send_binary(message.get("bytes") or b"")
            self.flush()
            if self.write_paused and not self.closed:
                waiter = self.loop.create_future()
                self.drain_waiters.append(waiter)
                await waiter
        elif kind == "websocket.accept":
            if self.state != CONNECTING:
                raise RuntimeError("websocket.accept after the handshake was answered")
            self.accept(message)
        elif kind == "websocket.close":
            if self.state == CONNECTING:
                self.state = DENYING
                if not self.closed:
                    self.write_status(403)
            elif self.state == OPEN:
                self.close(message.get("code") or 1000, message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if self.state != CONNECTING:
                raise RuntimeError("websocket.http.response.start after the handshake was answered")
            self.state = DENYING
            self.deny_status = message["status"]
            self.deny_headers = message.get("headers", ())
        elif kind == "websocket.http.response.body":
            if self.state != DENYING or not self.deny_status:
                raise RuntimeError("websocket.http.response.body without websocket.http.response.start")
            self.deny_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.write_denial()
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a websocket")

    def accept(self, message: dict[str, Any]) -> None:
        self.state = OPEN
        if self.closed:
            return
        headers = self.response.headers
        subprotocol = message.get("subprotocol")
        if subprotocol:
            headers["Sec-WebSocket-Protocol"] = subprotocol
        for name, value in message.get("headers") or ():
            headers[name.decode(_ENCODING)] = value.decode(_ENCODING)
        server = self.server
        server.send_response(self.response)
        # The handshake was parsed by httptools, never fed to ServerProtocol: its parser, still waiting
        # for a request, restarts in the OPEN state, where it reads frames.
        server.parser = server.parse()
        next(server.parser)
        self.flush()
        if self.early:
            early, self.early = self.early, b""
            self.data_received(early)
        if self.pending_close:
            self.close(self.pending_close, "")

    def write_status(self, status: int) -> None:
        """A server-made answer to the handshake (403: the app closed before accepting; 500: it failed)."""
        self.deny_status = status
        self.deny_headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self.deny_body = [HTTPStatus(status).phrase.encode() + b"\n"]
        self.write_denial()

    def write_denial(self) -> None:
        body = b"".join(self.deny_body)
        parts = [status_line(self.deny_status), self.shared.date_server]
        for name, value in self.deny_headers:
            if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        if not self.closed:
            self.transport.write(b"".join(parts) + body)
            self.close_transport()
        self.shared.counted()

    # -- the connection ---------------------------------------------------------------------------

    def peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a unix socket"

    def flush(self) -> None:
        for data in self.server.data_to_send():
            if self.closed:
                return
            if data:
                self.transport.write(data)
            else:  # the closing handshake is over: the server closes the TCP connection
                self.close_transport()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with `code` (the app, a drain, or the end of the app's call)."""
        if self.closed or self.server.state is not State.OPEN:
            return
        self.server.send_close(code, reason)
        self.closing_since = self.shared.clock or 1.0
        self.flush()

    def close_transport(self) -> None:
        if not self.closed:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        server = self.server
        if server.state is State.CONNECTING:  # a client that did not wait for the 101
            self.early += data
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        server.receive_data(data)
        self.last_seen = self.shared.clock
        self.ping_sent = 0.0  # any traffic shows the peer is alive
        for frame in server.events_received():
            if not isinstance(frame, Frame):
                continue  # (a Request: only in the CONNECTING state, which ended at accept)
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self.fragment_text = opcode is Opcode.TEXT
                if frame.fin:
                    self.deliver(bytes(frame.data))
                else:
                    self.fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT:
                self.fragments.append(bytes(frame.data))
                if frame.fin:
                    data, self.fragments = b"".join(self.fragments), []
                    self.deliver(data)
            elif opcode is Opcode.CLOSE:
                rcvd = server.close_rcvd
                if rcvd is not None:
                    self.close_code, self.close_reason = rcvd.code, rcvd.reason
        self.flush()
        if server.state is State.CLOSED:
            self.wake()

    def deliver(self, data: bytes) -> None:
        if self.fragment_text:
            try:
                message: dict[str, Any] = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.server.fail(1007, "invalid UTF-8")
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self.messages.append(message)
        if len(self.messages) >= self.settings.ws_max_queue and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self.server.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.server.state is not State.CLOSED:
            with contextlib.suppress(Exception):
                self.server.receive_eof()
        rcvd = self.server.close_rcvd
        if rcvd is None:
            self.close_code, self.close_reason = 1006, ""
        self.wake()
        self.resume_writing()
        if self.state == CONNECTING:
            self.state = CLOSED
        self.count_out()

    def count_out(self) -> None:
        """Leave the server's open connections once both the socket and the app's call have ended."""
        if self.closed and not self.app_running and not self.counted_out:
            self.counted_out = True
            self.shared.closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- what the server calls: the once-a-second sweep and the drain -------------------------------

    def sweep(self, now: float) -> None:
        if self.closed:
            return
        if self.closing_since:
            if now - self.closing_since >= CLOSE_TIMEOUT:
                self.transport.abort()
            return
        if self.server.state is not State.OPEN:
            return
        settings = self.settings
        left = self.transport.get_write_buffer_size()
        if left:
            # The client is still taking what was sent: a ping would wait behind it, so no ping clock
            # runs; a client that takes nothing for --timeout-write is dropped.
            if self.ping_sent:
                self.ping_sent = now
            if write_stalled(self, left, now, settings.timeout_write):
                log_line(f"closed a WebSocket from {self.peer()}: it read nothing ({left} bytes waiting) "
                         f"for {settings.timeout_write:g} s")
                self.transport.abort()
            return
        self.write_left = 0
        if self.ping_sent:
            if settings.ws_ping_timeout and now - self.ping_sent >= settings.ws_ping_timeout:
                log_line(f"closed a WebSocket from {self.peer()}: no pong for {settings.ws_ping_timeout:g} s")
                self.server.fail(1011, "keepalive ping timeout")
                self.flush()
                self.transport.abort()
        elif settings.ws_ping_interval and now - self.last_seen >= settings.ws_ping_interval:
            self.ping_sent = now
            self.server.send_ping(b"prun")
            self.flush()

    def drain(self) -> None:
        """The server drains: the WebSocket gets the drain window, then close_if_idle closes it."""

    def close_if_idle(self) -> None:
        """End of the drain window: close with 1012 (Service Restart) on a reload, 1001 (Going Away) on a stop."""
        code = 1001 if self.shared.going_away else 1012
        if self.state == CONNECTING:
            self.pending_close = code
        elif self.state == OPEN:
            self.close(code, "server stopping" if code == 1001 else "server restarting")
