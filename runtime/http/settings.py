"""What every connection of a worker's HTTP server reads: its settings and the state they share.

The leaf of runtime/http/: it imports nothing else of the package but the two leaves it builds on (logs,
proxy), so the modules above it (exchange, protocol, asgi, wsgi, server) import one way. Settings are
built once from WorkerOptions; Shared is the server's mutable state that per-request code touches (the
clock and the Date header, the response-head cache, counters). Both are read on the hot path: plain
attributes in __slots__, no properties.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

from prun.runtime import install_hint
from prun.runtime.http.logs import AccessLog
from prun.runtime.http.proxy import TrustedProxies
from prun.runtime.options import WorkerOptions
from prun.runtime.server import BootError
from prun.runtime.tls import http2_on, zttp_missing

# Reading pauses while this much request body waits for the app, and resumes below LOW_WATER.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# After the last response on a connection, how long to wait for the client to close (lingering close).
LINGER_SECONDS = 2.0
# Requests parsed ahead of the one being answered: past this many, parsing (and reading) waits.
PIPELINE_LIMIT = 100
# A read larger than this is parsed in slices of it, so that PIPELINE_LIMIT holds within one read.
FEED_SLICE = 4096
# Alike response heads built within one second are reused (exchange.py); at most this many are kept.
HEAD_CACHE_SIZE = 256


class Settings:
    """The HTTP options of a worker, checked and derived once at boot."""

    __slots__ = (
        "limit_line", "limit_header", "limit_head", "limit_body", "limit_concurrency", "keepalive",
        "timeout_header", "timeout_write",
        "root_path", "root_path_bytes", "proxy_headers", "trusted", "access_log", "server_header",
        "drain_idle_window", "backlog", "scheme", "ws_scheme",
        "ws", "ws_refusal", "ws_max_size", "ws_ping_interval", "ws_ping_timeout", "ws_max_queue",
        "http2", "http2_max_streams", "http2_engine",
    )  # fmt: skip

    def __init__(self, options: WorkerOptions) -> None:
        if options.access_log not in ("", "common", "json"):
            raise BootError(f"unknown access log format {options.access_log!r} (choose from common, json)")
        self.limit_line = options.limit_request_line
        self.limit_header = options.limit_request_header_size
        # The bytes of a head that has not ended, its URL apart (bound by limit_line as it comes), beyond
        # which it is refused with 431 (protocol.py): the header section, the rest of the request line,
        # and the bytes before the head in the read it began in (less than FEED_SLICE), counted with it.
        self.limit_head = options.limit_request_header_size + 32 + FEED_SLICE
        self.limit_body = options.limit_request_body or 1 << 62  # 0: no limit
        self.limit_concurrency = options.limit_concurrency
        self.keepalive = options.keepalive_timeout
        self.timeout_header = options.timeout_request_header  # 0: never
        self.timeout_write = options.timeout_write  # 0: never
        self.root_path = options.root_path.rstrip("/")
        self.root_path_bytes = self.root_path.encode()
        self.proxy_headers = options.proxy_headers
        self.trusted = TrustedProxies(options.forwarded_allow_ips)
        self.access_log = AccessLog.from_options(options)
        self.server_header = options.server_header
        self.drain_idle_window = options.drain_idle_window
        self.backlog = options.backlog
        # The one place the scheme comes from: what scope["scheme"] (http and websocket) and
        # wsgi.url_scheme say, unless a trusted proxy's X-Forwarded-Proto says otherwise.
        tls = bool(options.certfile)
        self.scheme = "https" if tls else "http"
        self.ws_scheme = "wss" if tls else "ws"
        if options.ws not in ("auto", "none"):
            raise BootError(f"unknown --ws {options.ws!r} (choose from auto, none)")
        # WebSocket upgrades (websocket.py): on when the websockets library imports, unless --ws none.
        self.ws = options.ws == "auto" and importlib.util.find_spec("websockets") is not None
        self.ws_refusal = "" if self.ws else (
            "WebSocket is off (--ws none)" if options.ws == "none"
            else f"the websockets library is not installed ({install_hint('ws')})"
        )  # fmt: skip
        self.ws_max_size = options.ws_max_size or None  # 0: no limit
        self.ws_ping_interval = options.ws_ping_interval  # 0: no pings
        self.ws_ping_timeout = options.ws_ping_timeout
        self.ws_max_queue = max(1, options.ws_max_queue)
        if options.http not in ("auto", "1", "2"):
            raise BootError(f"unknown --http {options.http!r} (choose from auto, 1, 2)")
        # HTTP/2 (h2conn.py): on when the h2 library imports, unless --http 1; --http 2 requires it.
        self.http2 = http2_on(options)
        if options.http == "2" and not self.http2:
            raise BootError(f"--http 2 needs the h2 library, which is not installed: {install_hint('http2')}")
        self.http2_max_streams = max(1, options.http2_max_streams)
        engine = options.http2_engine
        if engine not in ("auto", "h2", "zttp"):
            raise BootError(f"unknown --http2-engine {engine!r} (choose from auto, h2, zttp)")
        zttp = importlib.util.find_spec("zttp") is not None
        if self.http2 and engine == "zttp" and not zttp:
            raise BootError(zttp_missing())
        self.http2_engine = ("zttp" if zttp else "h2") if engine == "auto" else engine  # (auto: zttp if installed)


class Shared:
    """The server's state that its connections and exchanges read and update, on the loop thread."""

    __slots__ = (
        "app", "exchange_cls", "make_host", "executor", "state", "clock", "date_server", "date_lines",
        "heads", "active", "requests", "request_limit", "on_limit", "draining", "protocols", "on_change",
        "on_empty", "server_header", "going_away", "ws_refused", "release_host", "spare_hosts", "h2_exchange_cls",
        "h2_protocol_cls", "h2_logged", "h2_heads",
    )  # fmt: skip

    def __init__(self, app: Any, settings: Settings, clock: float) -> None:
        self.app = app
        # Set by the server for its interface: the Exchange subclass, and how a connection gets its
        # host task (ASGI) or None (WSGI); the WSGI thread pool.
        self.exchange_cls: Any = None
        self.make_host: Callable[[Any], Any] | None = None
        self.release_host: Callable[[Any], None] = lambda proto: None
        self.spare_hosts: list[Any] = []  # idle host tasks parked for the next connections (asgi.py)
        self.executor: Any = None
        self.h2_exchange_cls: Any = None  # the Exchange subclass of an HTTP/2 stream (h2exchange.py); None: no HTTP/2
        self.h2_protocol_cls: Any = None  # the protocol of an HTTP/2 connection (h2conn.py, or h2zttp.py)
        self.state: dict[str, Any] = {}  # the lifespan state, shallow-copied into every request
        self.server_header = settings.server_header
        self.clock = clock
        self.date_server = b""  # "date: ...\r\nserver: prun\r\n", refreshed every second
        self.date_lines = 1
        self.heads: dict[Any, tuple[bytes, int, bool, bool]] = {}  # response heads built this second (exchange.py)
        self.h2_heads: dict[Any, Any] = {}  # HTTP/2's, this second (h2output.py)
        self.active = 0  # app calls running
        self.requests = 0  # responses written since start
        self.request_limit = 0  # max-requests: on_limit is called once when `requests` reaches it
        self.on_limit: Callable[[], None] = lambda: None
        self.draining = False
        self.going_away = False  # the master stops (not a reload): WebSockets close with 1001, not 1012
        self.ws_refused: set[str] = set()  # why upgrades were refused, each logged once
        self.h2_logged: set[str] = set()  # why HTTP/2 connections were closed, each logged once (h2conn.py)
        self.protocols: set[Any] = set()  # the open connections
        self.on_change: Callable[[], None] = lambda: None  # the number of connections changed
        self.on_empty: Callable[[], None] = lambda: None  # the last connection closed
        self.tick(clock)

    def served(self, ex: Any, access_log: AccessLog | None, seconds: float) -> None:
        """A response went out whole (over HTTP/1.1 or on an HTTP/2 stream): count it, and log it."""
        self.requests += 1
        if self.requests == self.request_limit:
            self.on_limit()
        if access_log is not None:
            access_log.write(ex.scope, ex.status, ex.sent, seconds)

    def tick(self, now: float) -> None:
        """Once a second: the clock, a fresh Date header, and an empty head cache (heads hold the Date)."""
        self.clock = now
        line = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"
        if self.server_header:
            line += b"server: prun\r\n"
        self.date_server = line
        self.date_lines = line.count(b"\n")
        self.heads.clear()
        self.h2_heads.clear()

    def counted(self) -> None:
        """One more response written (server-made errors included)."""
        self.requests += 1
        if self.requests == self.request_limit:
            self.on_limit()

    def opened(self, proto: Any) -> None:
        self.protocols.add(proto)
        self.on_change()

    def closed(self, proto: Any) -> None:
        self.protocols.discard(proto)
        self.on_change()
        if not self.protocols:
            self.on_empty()


def wake_all(waiters: list[Any]) -> None:
    """Resolve every future in `waiters` not done yet (writers waiting for the client to read on)."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def addresses(transport: Any) -> tuple[tuple[str, int] | None, Any]:
    """A connection's (client, server) as ASGI gives them: (host, port) pairs, a unix socket's server as
    (path, None); None where the transport does not say."""
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
    if isinstance(local, tuple):
        return client, (local[0], local[1])
    return client, (local, None) if local else None


def decode_path(raw_path: bytes) -> str:
    """A request's path as ASGI's `path` and WSGI's PATH_INFO carry it: percent-decoded, UTF-8 where it is not ASCII."""
    if b"%" in raw_path:
        return unquote(raw_path.decode("latin-1"))
    try:
        return raw_path.decode("ascii")
    except UnicodeDecodeError:
        return raw_path.decode("utf-8", "replace")
