"""One HTTP/1.1 connection: parsing with httptools, pipelining, flow control, keep-alive and closing.

This module is a hot path and is written for speed: no timer or Task per request, attributes in
__slots__, the per-request work done in as few Python calls as possible. The time bounds (keep-alive,
--timeout-request-header, --timeout-write, lingering close) are enforced by the server's once-a-second
sweep, not by a timer per connection.

Every request read is answered in order, or the connection closes: a request the parser refuses gets
its error status only after the answers owed to the requests pipelined before it, and nothing after it
is read. Pipelining is bounded both ways: parsing stops once PIPELINE_LIMIT requests wait, and the next
request is not started while the client does not read (pause_writing).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import unquote

import httptools

from prun.runtime.http.exchange import Exchange, write_error, write_stalled
from prun.runtime.http.logs import log_line
from prun.runtime.http.proxy import forwarded
from prun.runtime.http.settings import (
    FEED_SLICE,
    LINGER_SECONDS,
    LOW_WATER,
    PIPELINE_LIMIT,
    Settings,
    Shared,
    addresses,
    wake_all,
)

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")}
_WATCH = frozenset((b"content-length", b"expect", b"transfer-encoding", b"connection"))
_WATCH_PROXY = _WATCH | {b"x-forwarded-for", b"x-forwarded-proto"}


class Reject(Exception):
    """A request the server answers itself with an error status, without calling the app."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class HttpProtocol(asyncio.Protocol):
    """Serves the requests of one connection in order, one at a time."""

    __slots__ = (
        "settings", "shared", "loop", "parser", "transport", "client", "sockname", "scheme", "url", "headers",
        "head_size", "head_bytes", "expect", "said_connection", "fwd_for", "fwd_proto", "watch", "parsing",
        "current", "queue", "start_pending", "idle_since", "read_paused", "write_paused", "drain_waiters",
        "closing", "closed", "lingering", "host", "host_box", "host_busy", "host_job",
        "draining_idle", "reused", "head_since", "unparsed", "feed_limit", "next_on_resume", "write_left", "write_since",
    )  # fmt: skip

    def __init__(self, settings: Settings, shared: Shared, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.shared = shared
        self.loop = loop
        self.parser: Any = httptools.HttpRequestParser(self)  # None once closed
        self.transport: Any = None
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.scheme = settings.scheme
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.head_bytes = 0
        self.expect = False
        self.said_connection = False  # the head being parsed has a Connection header
        self.fwd_for: bytes | None = None
        self.fwd_proto: bytes | None = None
        self.watch = _WATCH
        self.parsing: Exchange | None = None  # the request whose body the parser is reading
        self.current: Exchange | None = None  # the request being answered
        self.queue: deque[Exchange | int] = deque()  # pipelined requests (or an error status) waiting
        self.start_pending = False
        self.idle_since = shared.clock
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[Any] = []
        self.closing = False  # no more requests will be read on this connection
        self.closed = False
        self.lingering = False
        # The per-connection host task: see runtime/http/asgi.py.
        self.host: asyncio.Task[None] | None = None
        self.host_box: Any = None  # asgi.HostBox: the host task's own state
        self.host_busy = False
        self.host_job: Any = None
        self.draining_idle = False
        self.reused = False  # it has had a response: its client knows to retry on a closed keep-alive
        self.head_since = 0.0  # when the head being received began (0: none is), for --timeout-request-header
        # Bytes read but not parsed yet: parsing waits while PIPELINE_LIMIT requests wait for their answer.
        self.unparsed: bytearray | None = None
        self.feed_limit = FEED_SLICE  # a read larger than this is parsed in slices (-1: held back)
        self.next_on_resume = False  # the next pipelined request waits for the client to read (resume_writing)
        self.write_left = 0  # the write buffer at the last sweep, and since when it has not shrunk
        self.write_since = 0.0

    # -- connection events --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        shared = self.shared
        self.client, self.sockname = addresses(transport)
        settings = self.settings
        if settings.proxy_headers and (self.client is None or self.client[0] in settings.trusted):
            self.watch = _WATCH_PROXY
        if shared.make_host is not None:
            self.host = shared.make_host(self)
        shared.opened(self)
        if shared.draining:
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.closing = True
        for ex in (self.current, self.parsing):
            if ex is not None:
                ex.disconnect()
        for item in self.queue:
            if isinstance(item, Exchange):
                item.disconnect()
        self.queue.clear()
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters)
        if self.host is not None and not self.host_busy:
            self.shared.release_host(self)
        # The parser holds this protocol's bound methods, and so the two would live on as a cycle
        # until the garbage collector ran: dropped now, a closed connection is freed at once.
        self.parser = None
        self.shared.closed(self)

    def eof_received(self) -> bool | None:
        # The client is gone (HTTP clients do not half-close): the transport closes, the app sees
        # http.disconnect.
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.next_on_resume:
            self.next_on_resume = False
            self.loop.call_soon(self.next_request)
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters)

    # -- parsing (httptools callbacks) --------------------------------------------------------------

    def data_received(self, data: bytes | memoryview) -> None:
        """Feed the parser, answer what it refuses, and run a request whose head just completed."""
        if self.closing:
            return  # after the last response: discard whatever the client still sends
        if len(data) > self.feed_limit:  # FEED_SLICE, or -1 while bytes wait unparsed
            if self.unparsed is not None:  # (reading is paused; this is what was in flight)
                self.unparsed += data
            else:
                self.parse_slices(data)
            return
        if not self.url and self.parsing is None and not self.head_since:
            self.head_since = self.shared.clock  # a new head begins: --timeout-request-header runs
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.upgrade(data, upgrade):
                return
            # Other protocol upgrades (h2c...): the request is answered as plain HTTP, then the connection
            # closes, since what follows on it is not HTTP.
            self.closing = True
            if self.parsing is not None:
                self.parsing.complete()
                self.parsing = None
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self.reject(cause.status if isinstance(cause, Reject) else 400)
        except httptools.HttpParserError:
            if self.parser.get_method() == b"PRI" and self.shared.h2_exchange_cls is not None and not self.reused:
                # The HTTP/2 connection preface, sent with prior knowledge (RFC 9113 3.3): llhttp stops at
                # it, so detecting it costs HTTP/1.1 requests nothing. h2conn.py takes the connection over.
                from prun.runtime.http.h2conn import take_over

                if take_over(self, data):
                    return
            self.reject(400)
        else:
            if self.url:
                # A head that has not ended yet: bound what httptools accumulates for us (a header's
                # value, until it ends). Every read it spans is counted whole, from the one it began in:
                # less than FEED_SLICE bytes of that one (what came before the head) are counted with it.
                self.head_bytes += len(data)
                if not self.head_since:
                    self.head_since = self.shared.clock
                if self.head_bytes - len(self.url) > self.settings.limit_head:
                    self.reject(431)  # a URL too long is caught by on_url, as it arrives
                elif self.parser.get_http_version() == "0.0" and self.line_ended(data):
                    self.reject(400)  # an HTTP/0.9 request line: no version, and no head will follow
        # Whatever the parser refused after it, a request whose head is complete is answered first.
        if self.start_pending:
            self.start_pending = False
            self.current.run()  # type: ignore[union-attr]

    def upgrade(self, data: bytes | memoryview, upgrade: httptools.HttpParserUpgrade) -> bool:
        """A WebSocket upgrade on an ASGI connection: handed to wshandshake.py (whether it accepts or refuses it)."""
        ex = self.current
        if not self.start_pending or ex is None or self.shared.make_host is None or self.queue:
            return False  # WSGI, or an upgrade pipelined behind another request: plain HTTP, then close
        if not any(name == b"upgrade" and value.lower() == b"websocket" for name, value in ex.scope["headers"]):
            return False
        self.start_pending = False
        self.current = self.parsing = None
        if not self.settings.ws:  # (wshandshake.py needs the websockets library, which may not be installed)
            self.closing = True
            why = f"refused a WebSocket upgrade: {self.settings.ws_refusal}"
            if why not in self.shared.ws_refused:
                self.shared.ws_refused.add(why)
                log_line(f"{why}; answered 400 (logged once)")
            self.write_error(400)
            return True
        offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
        from prun.runtime.http.wshandshake import upgrade as take_over

        take_over(self, ex.scope, bytes(data[offset:]))
        return True

    def parse_slices(self, data: bytes | bytearray | memoryview) -> None:
        """Parse a large read a slice at a time, holding the rest back once PIPELINE_LIMIT requests wait.

        httptools parses all it is given at once: 256 KiB of pipelined GETs would otherwise become
        thousands of waiting requests. What is held back is parsed as the queue drains (next_request).
        """
        view = memoryview(data)
        for start in range(0, len(view), FEED_SLICE):
            if self.closing:
                if self.closed and not self.lingering:  # taken over (HTTP/2, WebSocket): the rest is the successor's
                    successor = self.transport.get_protocol()
                    if successor is not self:
                        successor.data_received(bytes(view[start:]))
                return
            if len(self.queue) >= PIPELINE_LIMIT:
                self.unparsed = bytearray(view[start:])
                self.feed_limit = -1
                self.pause_reading()
                return
            self.data_received(view[start : start + FEED_SLICE])

    def line_ended(self, data: bytes | memoryview) -> bool:
        """Whether the request line whose URL is in self.url ended within `data` (or before it)."""
        raw = bytes(data)
        return b"\n" in raw[raw.rfind(self.url[-1:]) + 1 :]

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.settings.limit_line:
            raise Reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if name in self.watch:
            self.watched(name, value)

    def watched(self, name: bytes, value: bytes) -> None:
        if name == b"content-length":
            if not value.isdigit():
                raise Reject(400)
            if int(value) > self.settings.limit_body:
                raise Reject(413)
        elif name == b"expect":
            if value.lower() == b"100-continue":
                self.expect = True
        elif name == b"transfer-encoding":
            # An HTTP/1.0 body framed by Transfer-Encoding may be read differently by a proxy in front
            # (RFC 9112 6.1): refused. (The request line, and so the version, is parsed by now.)
            if self.parser.get_http_version() != "1.1":
                raise Reject(400)
        elif name == b"connection":
            self.said_connection = True
        elif name == b"x-forwarded-for":
            self.fwd_for = value
        else:
            self.fwd_proto = value

    def on_headers_complete(self) -> None:
        settings = self.settings
        if self.head_size > settings.limit_header:
            raise Reject(431)
        parser = self.parser
        url = self.url
        headers = self.headers
        keep_alive = parser.should_keep_alive()
        if keep_alive and not self.said_connection:
            # llhttp parses only 0.9, 1.0, 1.1 and 2.0, and of them keeps alive without a Connection header
            # only HTTP/1.1: get_http_version (a str.format, 0.2 µs) is not needed.
            version = "1.1"
        else:
            self.said_connection = False
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                raise Reject(400)  # HTTP/0.9: no head to answer with
        # Ready for the next head (no on_message_begin callback: one Python call less per request).
        self.url = b""
        self.headers = []
        self.head_size = self.head_bytes = 0
        self.head_since = 0.0
        if not url.startswith(b"/"):
            if url == b"*":
                raw_path, query = url, b""
            else:  # absolute-form (a proxy request): keep only the path and query
                parsed = httptools.parse_url(url)
                raw_path, query = parsed.path or b"/", parsed.query or b""
        else:
            raw_path, _, query = url.partition(b"?")
            if b"#" in query:
                query = query.partition(b"#")[0]
        # settings.decode_path, inlined: calling it and Shared.served cost the pinned hello about 5% of req/s
        if b"%" in raw_path:
            path = unquote(raw_path.decode("latin-1"))
        else:
            try:
                path = raw_path.decode("ascii")
            except UnicodeDecodeError:
                path = raw_path.decode("utf-8", "replace")
        method = parser.get_method()
        client = self.client
        scheme = self.scheme
        if self.fwd_for is not None or self.fwd_proto is not None:
            client, scheme = forwarded(settings.trusted, client, scheme, self.fwd_for, self.fwd_proto)
            self.fwd_for = self.fwd_proto = None
        root = settings.root_path
        if root:
            path = root + path
            raw_path = settings.root_path_bytes + raw_path
        shared = self.shared
        state = shared.state
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.sockname,
            "client": client,
            "scheme": scheme,
            "method": _METHODS.get(method) or method.decode("ascii"),
            "root_path": root,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "state": state.copy() if state else {},
        }
        ex = shared.exchange_cls(self, scope, keep_alive, self.expect)
        self.expect = False
        self.parsing = ex
        if method == b"HEAD":
            ex.head_only = True
        if self.current is None and not self.start_pending and not self.queue:
            self.current = ex
            self.start_pending = True
        else:
            self.queue.append(ex)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        ex.received += len(body)  # type: ignore[union-attr]
        if ex.received > self.settings.limit_body:  # type: ignore[union-attr]
            raise Reject(413)
        ex.feed(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        ex.complete()  # type: ignore[union-attr]
        if self.shared.draining and self.current is ex and not self.queue:
            self.closing = True  # the answer to this request will be the connection's last

    # -- flow control -------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def maybe_resume_reading(self, force: bool = False) -> None:
        """Resume reading once no pipelined request waits and the app has taken the buffered body."""
        if self.read_paused and not self.queue and self.unparsed is None and not self.closed:
            ex = self.parsing
            if force or ex is None or ex.buffered < LOW_WATER:
                self.read_paused = False
                self.transport.resume_reading()

    async def drain_writes(self) -> None:
        """Wait until the transport's write buffer has room again (or the connection is gone)."""
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self.drain_waiters.append(waiter)
            await waiter

    # -- responses ----------------------------------------------------------------------------------

    def response_done(self, ex: Exchange, keep_alive: bool) -> None:
        """The response to `current` has been written completely."""
        shared = self.shared  # (Shared.served, inlined: it is on every request's path)
        shared.requests += 1
        if shared.requests == shared.request_limit:
            shared.on_limit()
        access_log = self.settings.access_log
        if access_log is not None:
            access_log.write(ex.scope, ex.status, ex.sent, self.loop.time() - ex.start_time)
        if self.current is not ex:
            return
        self.current = None
        self.reused = True
        if not keep_alive or self.closed:
            if ex.asked_close and ex.body_complete and not self.queue and self.unparsed is None and not self.closed:
                # The client said it sends nothing more, and everything it sent is read: no unread byte
                # can turn the close into a reset, so close outright instead of lingering for its FIN.
                self.closing = True
                self.transport.close()
                return
            self.close_gracefully()
            return
        if self.queue:
            self.loop.call_soon(self.next_request)
            return
        self.idle_since = shared.clock
        if self.read_paused:
            self.maybe_resume_reading()
        if self.draining_idle:
            self.close_gracefully()

    def next_request(self) -> None:
        if self.closed or self.current is not None or not self.queue:
            return
        if self.write_paused:
            # The client is not reading what it asked for: answer the next request once it does, so
            # that responses to pipelined requests do not pile up in the write buffer.
            self.next_on_resume = True
            return
        item = self.queue.popleft()
        if isinstance(item, int):
            self.write_error(item)
            return
        self.current = item
        if not self.queue:
            self.maybe_resume_reading()
            if self.shared.draining and item.body_complete:
                self.closing = True
        item.run()
        unparsed = self.unparsed
        if unparsed is not None and len(self.queue) < PIPELINE_LIMIT // 2 and not self.closing:
            self.unparsed = None
            self.feed_limit = FEED_SLICE
            self.parse_slices(unparsed)
            if self.unparsed is None and not self.queue:
                self.maybe_resume_reading()

    def reject(self, status: int) -> None:
        """Answer a request the parser refused, after any response still owed, then close."""
        self.closing = True
        self.url = b""
        self.head_since = 0.0
        self.unparsed = None
        self.feed_limit = FEED_SLICE
        self.pause_reading()
        ex = self.parsing
        if ex is not None and ex is not self.current:
            # A pipelined request whose body broke: the error is its answer, the app never sees it.
            self.parsing = None
            try:
                self.queue.remove(ex)
            except ValueError:
                pass
            ex.disconnect()
        elif ex is not None:
            # The request being answered broke its own body (413): it gets the error as its answer,
            # and the app, if it runs already, sees http.disconnect.
            self.parsing = None
            self.start_pending = False
            ex.disconnect()
            if ex.head_sent:
                self.transport.close()
            else:
                ex.answer_error(status)
            return
        if self.current is None and not self.queue:
            self.write_error(status)
        else:
            self.queue.append(status)

    def write_error(self, status: int) -> None:
        if not self.closed:
            write_error(self, status)
            self.shared.counted()
        self.close_gracefully()

    def close_gracefully(self) -> None:
        """Close after what was written: half-close, then wait briefly for the client to close.

        Closing outright with unread request bytes in the kernel would reset the connection and could
        destroy the last response before the client reads it.
        """
        self.closing = True
        if self.closed or self.lingering:
            return
        self.lingering = True
        self.idle_since = self.shared.clock
        transport = self.transport
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            try:
                transport.write_eof()
                return
            except (OSError, RuntimeError):
                pass
        transport.close()

    # -- keep-alive and drain -----------------------------------------------------------------------

    def is_idle(self) -> bool:
        return self.current is None and not self.queue and not self.head_since and not self.start_pending

    def sweep(self, now: float) -> None:
        """Called once a second by the server: close connections idle, stalled or trickling for too long."""
        if self.closed:
            return
        settings = self.settings
        left = self.transport.get_write_buffer_size()
        if left:
            # The client is still receiving a response: no idle or linger clock runs, but a client that
            # takes nothing of it for --timeout-write is dropped.
            self.idle_since = now
            if write_stalled(self, left, now, settings.timeout_write):
                log_line(f"closed a connection from {self.peer()}: it read nothing of its response "
                         f"({left} bytes waiting) for {settings.timeout_write:g} s")
                self.transport.abort()
            return
        self.write_left = 0
        since = self.head_since
        if since and not self.closing and settings.timeout_header and now - since >= settings.timeout_header:
            # Slowloris: a head that does not end in time. 408 if no response is owed first.
            self.head_since = 0.0
            if self.current is None and not self.queue and not self.start_pending:
                self.write_error(408)
            else:
                self.reject(408)
            return
        since = self.idle_since
        if since and now - since >= (LINGER_SECONDS if self.lingering else settings.keepalive):
            if self.lingering:
                self.transport.abort()
            elif self.is_idle():
                self.close_gracefully()

    def peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a unix socket"

    def drain(self) -> None:
        """The server drains: every later response closes the connection; idle ones get a short window."""
        if self.closed:
            return
        if self.is_idle():
            self.draining_idle = True
        elif self.parsing is None and self.current is not None and not self.queue:
            # The request in flight is complete: its response is the last on this connection.
            if self.current.body_complete:
                self.closing = True

    def close_if_idle(self) -> None:
        """End of the drain window: an idle keep-alive connection that sent nothing more is closed.

        A connection that has not sent its first request yet is left open (until it speaks, the
        keep-alive timeout or the drain deadline): its client just connected and is about to send,
        and closing it now could reset a request in flight that no client would retry.
        """
        if not self.closed and self.reused and self.is_idle():
            self.close_gracefully()
