"""One request and its response on a connection: body buffering and response framing.

The ASGI and WSGI adapters subclass Exchange. This module is a hot path, written for speed: the response
head is built once, in one join, and written together with the first body chunk in one write.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from http import HTTPStatus
from typing import Any, Protocol

from prun.runtime.http.logs import log_app_error
from prun.runtime.http.settings import HEAD_CACHE_SIZE, Settings, Shared

STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FRAMING = frozenset((b"content-length", b"connection", b"transfer-encoding"))
TCP_CORK = getattr(socket, "TCP_CORK", None)  # Linux


def status_line(status: int, reason: bytes | None = None) -> bytes:
    if reason is not None:
        return b"HTTP/1.1 %d %s\r\n" % (status, reason)
    line = STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status!r}")
        line = b"HTTP/1.1 %d \r\n" % status
    return line


class Connection(Protocol):
    """What an exchange uses of its connection (protocol.HttpProtocol), so that this module need not import it."""

    loop: asyncio.AbstractEventLoop
    transport: Any
    settings: Settings
    shared: Shared
    client: tuple[str, int] | None
    scheme: str
    closed: bool
    closing: bool
    queue: deque[Any]
    read_paused: bool
    write_paused: bool

    def response_done(self, ex: Exchange, keep_alive: bool) -> None: ...

    def pause_reading(self) -> None: ...

    def maybe_resume_reading(self, force: bool = False) -> None: ...


def cork_last(proto: Connection) -> None:
    """The next write is the connection's last (close or write_eof follows): cork the TCP socket, so
    that the response's last bytes and the FIN leave in one segment instead of two.

    Plain TCP only: under TLS the close waits for the client's close_notify, which would wait in turn
    for what the cork holds back.
    """
    if TCP_CORK is not None and proto.client is not None and proto.scheme == "http":
        try:
            proto.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
        except (OSError, AttributeError):
            pass


def write_error(proto: Connection, status: int, head_only: bool = False) -> None:
    """Write a small plain-text response the server makes itself (400, 413, 500, 503, ...); to a HEAD
    request (`head_only`), its head alone."""
    body = HTTPStatus(status).phrase.encode() + b"\n"
    proto.transport.write(
        b"".join(
            (
                status_line(status),
                proto.shared.date_server,
                b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % len(body),
                b"" if head_only else body,
            )
        )
    )


class Sending(Protocol):
    """A connection whose unsent bytes the once-a-second sweep watches (HTTP and WebSocket alike)."""

    write_left: int  # bytes waiting in the transport at the last sweep (0: none)
    write_since: float  # since when they have not gone down


def write_stalled(conn: Sending, left: int, now: float, timeout: float) -> bool:
    """Note `left` unsent bytes; True once the client has taken none of them for `timeout` s (0: never).

    The clock starts again only when the bytes waiting went down since the last sweep (the client took
    some): bytes that only pile up (the pongs to a client that sends pings and reads nothing) are as
    stalled as bytes that stay.
    """
    if left < conn.write_left or not conn.write_left:
        conn.write_left, conn.write_since = left, now
        return False
    conn.write_left = left
    return bool(timeout) and now - conn.write_since >= timeout


class Exchange:
    """The state of one request/response; subclasses run the app (run) and receive the body (feed)."""

    __slots__ = (
        "proto", "scope", "keep_alive", "expect", "head_only", "http11", "received", "buffered",
        "body_complete", "disconnected", "status", "reason", "resp_headers", "started", "head_sent",
        "finished", "chunked", "length", "sent", "continued", "start_time", "chunks", "waiter", "delivered",
        "asked_close",
    )  # fmt: skip

    def __init__(self, proto: Connection, scope: dict[str, Any], keep_alive: bool, expect: bool) -> None:
        self.proto = proto
        self.scope = scope
        self.keep_alive = keep_alive
        self.asked_close = not keep_alive  # the client said this is its last request (or spoke HTTP/1.0)
        self.expect = expect
        self.head_only = False
        self.http11 = scope["http_version"] != "1.0"
        self.received = 0
        self.buffered = 0
        self.body_complete = False
        self.disconnected = False
        self.status = 0
        self.reason: bytes | None = None
        self.resp_headers: Any = ()
        self.started = False
        self.head_sent = False
        self.finished = False
        self.chunked = False
        self.length = -1
        self.sent = 0
        self.continued = False
        self.start_time = proto.loop.time() if proto.settings.access_log is not None else 0.0
        # The ASGI body buffer lives here so that creating an AsgiExchange is a single __init__ call.
        self.chunks: list[bytes] = []
        self.waiter: Any = None  # a future the app's receive() waits on
        self.delivered = False  # the last body message was handed to the app

    # -- request side (called by the protocol on the loop) ----------------------------------------

    def run(self) -> None:
        raise NotImplementedError

    def feed(self, body: bytes) -> None:
        raise NotImplementedError

    def complete(self) -> None:
        self.body_complete = True

    def disconnect(self) -> None:
        self.disconnected = True

    def send_continue(self) -> None:
        """Answer `Expect: 100-continue` when the app first asks for the body."""
        if self.expect and not self.continued and not self.head_sent and not self.proto.closed:
            self.continued = True
            self.proto.transport.write(CONTINUE)

    # -- response side ----------------------------------------------------------------------------

    def start(self, status: int, headers: Any, reason: bytes | None = None) -> None:
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        self.status = status
        self.reason = reason
        self.resp_headers = headers

    def build_head(self, body_len: int, more: bool) -> bytes:
        proto = self.proto
        shared = proto.shared
        status = self.status
        # A plain HTTP/1.1 response with the same status, headers and length as an earlier one, to a
        # request that asked for the same keep-alive or close, reuses the head built then: apps answer
        # with the same few heads over and over. The cache is emptied every second, when the Date
        # header changes.
        headers = self.resp_headers  # any iterable of pairs (a generator, as Sanic gives): read once below
        key: Any = None
        if (
            self.http11 and self.reason is None and not self.head_only and not self.expect
            and not proto.closing and not shared.draining
        ):  # fmt: skip
            headers = tuple(headers)
            if headers and type(headers[0]) is not tuple:
                headers = tuple(map(tuple, headers))  # pairs given as lists, as uvicorn's docs write them
            key = (status, -1 if more else body_len, headers, self.keep_alive)
            try:
                cached = shared.heads.get(key)
            except TypeError:  # a name or value that is not hashable (a bytearray): build the head as usual
                key = cached = None
            if cached is not None:
                self.length, self.chunked, self.keep_alive = cached[1], cached[2], cached[3]
                return cached[0]
        line = STATUS_LINES.get(status) if self.reason is None else None
        parts = [line or status_line(status, self.reason), shared.date_server]
        lines = shared.date_lines + 2
        # Closing (a later request was refused, the client upgraded...): the requests pipelined before
        # that still get their answers, so only the last one owed closes the connection.
        keep = self.keep_alive and (not proto.closing or bool(proto.queue))
        if keep and shared.draining and not proto.queue:
            keep = False
        if self.expect and not self.continued and not self.body_complete:
            keep = False  # the client may or may not send the body it announced: do not reuse the connection
        length = -1
        for name, value in headers:
            lname = name.lower()
            if lname in _FRAMING:
                if lname == b"content-length":
                    length = int(value)
                elif lname == b"connection":
                    if value.lower() == b"close":
                        keep = False
                    continue
                else:
                    continue  # transfer-encoding: the server frames the body itself
            parts += (name, b": ", value, b"\r\n")
            lines += 1
        if status < 200 or status == 204 or status == 304:
            self.head_only = True
        elif length < 0 and not self.head_only:
            if not more:
                length = body_len
                parts.append(b"content-length: %d\r\n" % body_len)
                lines += 1
            elif self.http11:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
                lines += 1
            else:
                keep = False  # HTTP/1.0 without a length: the body ends when the connection does
        if not keep:
            parts.append(b"connection: close\r\n")
            lines += 1
        elif not self.http11:
            parts.append(b"connection: keep-alive\r\n")
            lines += 1
        parts.append(b"\r\n")
        head = b"".join(parts)
        # One scan instead of a check per header: a CR or LF inside a name or value adds a line.
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise ValueError("response header names and values must not contain CR or LF")
        self.keep_alive = keep
        self.length = length
        if key is not None and not self.head_only and len(shared.heads) < HEAD_CACHE_SIZE:
            shared.heads[key] = (head, length, self.chunked, keep)
        return head

    def write(self, body: bytes, more: bool) -> None:
        """Write a body chunk (the head first if not sent yet); `more=False` completes the response."""
        if self.finished:
            if self.disconnected:
                return
            raise RuntimeError("the response is already complete")
        if not self.started:
            raise RuntimeError("the response body was sent before the response start")
        proto = self.proto
        if not self.head_sent:
            data = self.build_head(len(body), more)
            self.head_sent = True
            if body and not self.head_only:
                if self.chunked:
                    data += b"%x\r\n%b\r\n" % (len(body), body)
                else:
                    data += body
            if not more and self.chunked:
                data += b"0\r\n\r\n"
        elif self.head_only:
            data = b""
        elif self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            data = body
        if body and not self.head_only:
            sent = self.sent + len(body)
            if self.length >= 0 and sent > self.length:
                raise RuntimeError(f"the response body is longer than its Content-Length ({self.length} bytes)")
            self.sent = sent
        if data and not proto.closed:
            if not more and not self.keep_alive:
                cork_last(proto)
            proto.transport.write(data)
        if not more:
            if 0 <= self.length != self.sent and not self.head_only:
                raise RuntimeError(
                    f"the response ended after {self.sent} of its {self.length} bytes (Content-Length)"
                )
            self.finished = True
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # an ASGI receive() in wait now returns http.disconnect
            proto.response_done(self, self.keep_alive)

    # -- the end of the app's call ----------------------------------------------------------------

    def answer_error(self, status: int) -> None:
        """Answer with a server-made error response and close the connection."""
        proto = self.proto
        self.started = self.finished = self.head_sent = True
        self.status = status
        proto.closing = True
        if not proto.closed:
            write_error(proto, status, self.scope.get("method") == "HEAD")
        proto.response_done(self, False)

    def app_done(self, exc: BaseException | None) -> None:
        """The app's call ended: answer for it if it did not answer properly. Called on the loop."""
        proto = self.proto
        proto.shared.active -= 1
        if self.finished or self.disconnected:
            if exc is not None and not self.disconnected and not isinstance(exc, asyncio.CancelledError):
                log_app_error(self.scope, exc)
            return
        if exc is not None:
            log_app_error(self.scope, exc)
        else:
            log_app_error(self.scope, None, "the app returned without completing its response")
        if not self.head_sent:
            self.answer_error(500)
        else:
            # Part of the response is out: the only honest signal left is closing the connection.
            self.finished = True
            proto.closing = True
            proto.transport.close()
