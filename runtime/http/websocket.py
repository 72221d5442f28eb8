"""An ASGI WebSocket connection (RFC 6455), once wshandshake.py has accepted its handshake.

The WebSocket object takes the HttpProtocol's place among the server's connections: under --balance
leastconn it still counts as open, and the server's sweep (pings, closing timeout) and drain reach it the
same way. Frames are read and written by wsframes.py (and why not by the websockets library: there).

Bounds: a message is at most --ws-max-size bytes and MAX_FRAGMENTS frames (1009 beyond either), its
UTF-8 checked as it comes (1007); reading pauses while --ws-max-queue messages wait for the app, and while
the client reads nothing of what is written to it (pause_writing: the app's send waits then too, and so
do the pongs to its pings); --timeout-write drops a client that takes nothing for that long, even while
what waits for it grows. A failed connection is half-closed after its close frame, and dropped
CLOSE_TIMEOUT later if the client has not hung up. A drain (reload) closes each WebSocket with 1012 after
the drain window, a stop with 1001; the connection leaves the server's set once both the socket closed
and the app's call returned, so the lifespan shutdown runs after both.
"""

from __future__ import annotations

import asyncio
from collections import deque
from http import HTTPStatus
from typing import Any

from websockets.extensions import Extension
from websockets.frames import Close
from websockets.http11 import Response

from prun.runtime.http.exchange import status_line, write_stalled
from prun.runtime.http.logs import log_app_error, log_line
from prun.runtime.http.settings import Settings, Shared, wake_all
from prun.runtime.http.wsframes import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Failure,
    FrameReader,
    close_frame,
    data_frame,
    frame,
)

CLOSE_TIMEOUT = 3.0  # seconds a client may take to answer our close frame before the socket is dropped
ENCODING = "latin-1"

CONNECTING, OPEN, DENYING, CLOSED = range(4)  # the app's side: before accept, accepted, denial sent, done


class ClientDisconnected(OSError):
    """Raised by send() once the connection is gone (Starlette turns an OSError into WebSocketDisconnect)."""


class WebSocket(asyncio.Protocol):
    """One WebSocket connection and the app's call serving it."""

    def __init__(self, proto: Any, response: Response, extensions: list[Extension], scope: dict[str, Any]) -> None:
        self.settings: Settings = proto.settings
        self.shared: Shared = proto.shared
        self.loop: asyncio.AbstractEventLoop = proto.loop
        self.transport: Any = proto.transport
        self.client = proto.client
        self.host: asyncio.Task[None] | None = None  # the app's task (the server's drain cancels it at the deadline)
        self.response = response
        self.extensions = extensions
        self.reader = FrameReader(self.settings.ws_max_size, extensions)
        self.scope = scope
        self.state = CONNECTING
        self.connected_sent = False
        self.messages: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.read_paused = False
        self.write_paused = False
        self.closed = False  # the socket is gone
        self.close_sent = False  # our close frame went out: nothing but control frames may follow
        self.done = False  # the client's close arrived, or the connection failed: no frame is read any more
        self.app_running = False
        self.counted_out = False
        self.close_code = 1006
        self.close_reason = ""
        self.closing_since = 0.0  # since when the client should answer our close frame, or hang up after its own
        self.pending_close = 0  # a drain asked to close before the app accepted
        self.last_seen = self.shared.clock
        self.ping_sent = 0.0
        self.write_left = 0  # the write buffer at the last sweep, and since when it has not shrunk
        self.write_since = 0.0
        self.deny_status = 0
        self.deny_headers: Any = ()
        self.deny_body: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

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
        over = self.closed or self.done  # an app that sends after the end gets ClientDisconnected: not its error
        if exc is not None and not (over and isinstance(exc, (OSError, asyncio.CancelledError))):
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
                if self.read_paused and len(self.messages) <= self.settings.ws_max_queue // 2:
                    self.read_on()
                return message
            if self.closed or self.done or self.state in (DENYING, CLOSED):
                return {"type": "websocket.disconnect", "code": self.close_code, "reason": self.close_reason}
            self.waiter = waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if self.state != OPEN or self.closed or self.close_sent or self.done:
                raise ClientDisconnected("the WebSocket is closed")
            text = message.get("text")
            if text is not None:
                self.transport.write(data_frame(TEXT, text.encode(), self.extensions))
            else:
                self.transport.write(data_frame(BINARY, message.get("bytes") or b"", self.extensions))
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
            headers[name.decode(ENCODING)] = value.decode(ENCODING)
        self.transport.write(self.response.serialize())
        self.read_on()  # frames that came before the accept, then what follows
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

    # -- reading frames ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.done:
            return  # after the close (or a failure): what the client still sends is discarded
        self.last_seen = self.shared.clock
        self.ping_sent = 0.0  # any traffic shows the peer is alive
        self.reader.buffer += data
        if self.read_paused:
            return  # (bytes in flight when reading paused: read when it resumes)
        self.read_frames()

    def read_frames(self) -> None:
        """Act on each complete frame buffered, until none is left or reading must pause.

        Hot path: a message is queued for the app and the app woken once per read. Reading pauses
        while the app has --ws-max-queue messages waiting, while the client reads nothing of what is
        written to it (pongs included: pause_writing), and until the app has accepted.
        """
        reader = self.reader
        messages = self.messages
        queued = False
        while True:
            if self.held():
                self.read_off()
                break
            try:
                event = reader.next()
            except Failure as failure:
                self.fail(failure.code, failure.reason)
                break
            if event is None:
                break
            kind, data = event
            if kind == TEXT:
                messages.append({"type": "websocket.receive", "text": data})
                queued = True
            elif kind == BINARY:
                messages.append({"type": "websocket.receive", "bytes": data})
                queued = True
            elif kind == PING:
                self.transport.write(frame(PONG, data))
            elif kind == CLOSE:
                self.close_received(data)
                break
            # (PONG: any traffic counts as a sign of life; see data_received)
        if queued or self.done:
            self.wake()

    def held(self) -> bool:
        """Whether reading must wait: for the accept, for the app to take messages, for the client to read."""
        return self.state == CONNECTING or self.write_paused or len(self.messages) >= self.settings.ws_max_queue

    def read_off(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def read_on(self) -> None:
        """Resume reading (frames already buffered first), unless it must stay paused."""
        if self.closed or self.done or self.held():
            return
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.read_frames()

    def close_received(self, close: Close) -> None:
        """The client's close frame: echo it (unless ours went first), then close the TCP connection."""
        self.close_code, self.close_reason = close.code, close.reason
        if not self.close_sent:
            self.close_sent = True
            self.transport.write(frame(CLOSE, b"" if close.code == 1005 else close.serialize()))
        self.hang_up()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close frame with `code`, then the TCP close."""
        if not self.close_sent:
            self.close_sent = True
            self.transport.write(close_frame(code, reason))
        self.hang_up()

    def hang_up(self) -> None:
        """End the connection once the close frames are out: the server closes TCP first (RFC 6455 7.1.1).

        Half-closed, so that bytes the client sends meanwhile (the rest of a message too large) are read
        and dropped rather than turn the close into a reset that could destroy the close frame; the
        transport closes at the client's end of file, or after CLOSE_TIMEOUT.
        """
        self.done = True
        self.reader.abandon()
        self.wake()  # the app gets the messages queued, then the disconnect
        self.closing_since = self.shared.clock or 1.0
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            try:
                self.transport.write_eof()
                return
            except (OSError, RuntimeError):
                pass
        self.close_transport()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- writing ------------------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with `code` (the app, a drain, or the end of the app's call)."""
        if self.closed or self.close_sent or self.done:
            return
        data = close_frame(code, reason)  # (a code that may not be sent raises, to the app)
        self.close_sent = True
        self.transport.write(data)
        self.closing_since = self.shared.clock or 1.0

    def close_transport(self) -> None:
        if not self.closed:
            self.transport.close()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters)
        if self.read_paused and not self.closed:
            self.loop.call_soon(self.read_on)  # (not from inside the transport's write)

    # -- the connection ---------------------------------------------------------------------------

    def peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a unix socket"

    def eof_received(self) -> bool | None:
        # The client hung up: after the closing handshake, as expected; before it, abnormally (1006).
        self.done = True
        self.wake()
        return None  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.done = True
        self.reader.abandon()
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

    # -- what the server calls: the once-a-second sweep and the drain -------------------------------

    def sweep(self, now: float) -> None:
        if self.closed:
            return
        if self.closing_since:
            if now - self.closing_since >= CLOSE_TIMEOUT:
                self.transport.abort()
            return
        if self.state != OPEN or self.done:
            return
        settings = self.settings
        left = self.transport.get_write_buffer_size()
        if left:
            # The client is still taking what was sent: a ping would wait behind it, so no ping clock
            # runs; a client that takes nothing for --timeout-write is dropped, even while what waits
            # for it grows (pongs to a ping flood).
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
                self.fail(1011, "keepalive ping timeout")
                self.transport.abort()
        elif settings.ws_ping_interval and now - self.last_seen >= settings.ws_ping_interval:
            self.ping_sent = now
            self.transport.write(frame(PING, b"prun"))

    def drain(self) -> None:
        """The server drains: the WebSocket gets the drain window, then close_if_idle closes it."""

    def close_if_idle(self) -> None:
        """End of the drain window: close with 1012 (Service Restart) on a reload, 1001 (Going Away) on a stop."""
        code = 1001 if self.shared.going_away else 1012
        if self.state == CONNECTING:
            self.pending_close = code
        elif self.state == OPEN:
            self.close(code, "server stopping" if code == 1001 else "server restarting")
