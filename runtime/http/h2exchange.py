"""One HTTP/2 stream as an Exchange: the ASGI and WSGI adapters of HTTP/1.1, with HTTP/2 framing.

H2Stream replaces what Exchange writes as HTTP/1.1 bytes (the head, the body, 100 Continue, the
server's own error answers, a broken response's close) with frames on its stream, through the
connection (h2conn.py); AsgiH2Exchange and WsgiH2Exchange put it in front of the adapters. A stream's
response data waits in `out` while the peer's window is shut; the app's send waits with it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from h2.errors import ErrorCodes

from prun.runtime.http.asgi import AsgiExchange
from prun.runtime.http.logs import log_app_error
from prun.runtime.http.settings import HIGH_WATER, wake_all
from prun.runtime.http.wsgi import WsgiExchange, WsgiInput

# The state an exchange keeps for its stream (declared by each concrete class: two bases with slots
# of their own cannot be combined).
H2_SLOTS = ("stream_id", "out", "out_end", "trailers", "held", "live", "blocked_since", "out_waiters",
            "reset_done")


class H2Stream:
    """What an HTTP/2 stream changes in an Exchange (a mixin, before AsgiExchange or WsgiExchange)."""

    __slots__ = ()
    proto: Any
    stream_id: int
    out: bytes  # response data waiting for window
    out_end: int  # 0: the stream goes on; 1: END_STREAM once `out` is sent; 2: END_STREAM sent
    trailers: Any  # False; True: the app announced trailers; a list: the trailers received so far
    held: int  # received data not acknowledged yet (the app is behind)
    live: bool  # the app call is counted in the connection's apps
    blocked_since: float
    out_waiters: list[asyncio.Future[None]]
    reset_done: bool  # the client reset the stream

    def __init__(self: Any, proto: Any, scope: dict[str, Any], keep_alive: bool, expect: bool) -> None:
        super().__init__(proto, scope, keep_alive, expect)  # type: ignore[call-arg]  # (the adapter's, next in the MRO)
        self.stream_id = 0
        self.out = b""
        self.out_end = 0
        self.trailers = False
        self.held = 0
        self.live = False
        self.blocked_since = 0.0
        self.out_waiters = []
        self.reset_done = False

    def wake_writers(self: Any) -> None:
        waiters, self.out_waiters = self.out_waiters, []
        wake_all(waiters)

    async def writable(self) -> None:
        """Wait until this stream's data has gone out and the connection takes more (or the stream is gone)."""
        waiter = self.proto.loop.create_future()
        self.out_waiters.append(waiter)
        await waiter

    # -- Exchange's HTTP/1.1 writing, as frames -----------------------------------------------------

    def write(self: Any, body: bytes, more: bool) -> None:
        """Write a body chunk (the head first if not sent yet); `more=False` completes the body."""
        if self.finished:
            if self.disconnected:
                return
            raise RuntimeError("the response is already complete")
        if not self.started:
            raise RuntimeError("the response body was sent before the response start")
        proto = self.proto
        end = not more and self.trailers is False
        ended = False
        if not self.head_sent:
            self.head_sent = True
            if not self.disconnected:
                ended = proto.response_headers(self, body, end)
        if body and not self.head_only:
            sent = self.sent + len(body)
            if self.length >= 0 and sent > self.length:
                raise RuntimeError(f"the response body is longer than its Content-Length ({self.length} bytes)")
            self.sent = sent
            if not self.disconnected:
                self.out = self.out + body if self.out else body
                if end:
                    self.out_end = 1
                proto.push(self)
        elif end and not ended and not self.disconnected and self.out_end != 2:
            proto.end_empty(self)
        if not more:
            if 0 <= self.length != self.sent and not self.head_only:
                raise RuntimeError(
                    f"the response ended after {self.sent} of its {self.length} bytes (Content-Length)"
                )
            self.finished = True
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # an ASGI receive() in wait now returns http.disconnect
            if not self.disconnected and not self.out and self.trailers is False:
                proto.stream_done(self)

    def send_trailers(self: Any, headers: Any, more: bool) -> None:
        if self.trailers is True:
            self.trailers = []
        self.trailers += [(bytes(name), bytes(value)) for name, value in headers]
        if not more and not self.disconnected:
            self.proto.trailers(self, self.trailers)
            self.proto.stream_done(self)

    def send_continue(self: Any) -> None:
        if self.expect and not self.continued and not self.head_sent and not self.proto.closed:
            self.continued = True
            self.proto.informational(self, 100)

    def answer_error(self: Any, status: int) -> None:
        """Answer with a server-made error response on this stream (the app did not, or may not, run)."""
        proto = self.proto
        self.started = self.finished = self.head_sent = True
        self.status = status
        self.disconnected = True  # (the app's later sends, if it runs, go nowhere)
        proto.app_ended(self)
        if proto.streams.pop(self.stream_id, None) is not None:
            proto.blocked.pop(self.stream_id, None)
            proto.held.discard(self)
            proto.respond_error(self.stream_id, status, self.scope.get("method") == "HEAD", not self.body_complete)
            proto.stream_gone()

    def app_done(self: Any, exc: BaseException | None) -> None:
        """The app's call ended: a response it broke off is reset (INTERNAL_ERROR), not closed with the connection."""
        proto = self.proto
        proto.app_ended(self)
        if self.head_sent and not self.disconnected and (not self.finished or self.trailers is True):
            proto.shared.active -= 1
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                log_app_error(self.scope, exc)
            elif exc is None:
                log_app_error(self.scope, None, "the app returned without completing its response")
            self.finished = True
            proto.reset_exchange(self, ErrorCodes.INTERNAL_ERROR)
            return
        super().app_done(exc)  # type: ignore[misc]


class AsgiH2Exchange(H2Stream, AsgiExchange):
    """An ASGI http request on an HTTP/2 stream (trailers: the http.response.trailers extension)."""

    __slots__ = H2_SLOTS

    def feed(self, body: bytes) -> None:
        if self.finished or self.disconnected:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.disconnected:
                return
            more = message.get("more_body", False)
            self.write(message.get("body", b""), more)
            if (self.out or self.proto.write_paused) and not self.disconnected and (more or self.trailers):
                await self.writable()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            self.started = True
            self.status = message["status"]
            self.resp_headers = message.get("headers", ())
            self.trailers = bool(message.get("trailers", False))
        elif kind == "http.response.trailers":
            if self.trailers is False:
                raise RuntimeError("http.response.trailers without 'trailers': True in http.response.start")
            if not self.finished:
                raise RuntimeError("http.response.trailers before the last http.response.body")
            if self.disconnected:
                return
            while self.out and not self.disconnected:
                await self.writable()
            self.send_trailers(message.get("headers", ()), message.get("more_trailers", False))
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an http request")


class WsgiH2Exchange(H2Stream, WsgiExchange):
    """A WSGI request on an HTTP/2 stream, its app on the thread pool as over HTTP/1.1."""

    __slots__ = H2_SLOTS

    def feed(self, body: bytes) -> None:
        if self.finished or self.disconnected:
            return
        if self.input is None:
            self.input = WsgiInput(self)
        self.buffered = self.input.feed(body)
        if self.buffered > HIGH_WATER and self.waiting_body:
            self.dispatch()

    def send(self, data: bytes, more: bool) -> None:
        """(the app's thread) A body chunk; a streamed one waits until its stream takes more."""
        if self.wsgi_status is None:
            raise RuntimeError("the app sent a body before calling start_response")
        self.head_requested = True
        self.call(self.write_from_app, data, more)
        if more and not self.disconnected:
            event = threading.Event()
            self.call(self.when_writable, event)
            event.wait()

    def when_writable(self, event: threading.Event) -> None:
        if self.disconnected or self.proto.closed or (not self.out and not self.proto.write_paused):
            event.set()
            return
        waiter = self.proto.loop.create_future()
        waiter.add_done_callback(lambda _: event.set())
        self.out_waiters.append(waiter)
