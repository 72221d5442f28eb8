"""WSGI apps (PEP 3333) behind the same HTTP protocol, each call run on the server's bounded thread pool.

The loop thread owns the connection; the app's thread talks to it only through call_soon_threadsafe.
The request body streams: wsgi.input reads block the app's thread while the loop feeds it, and the
loop stops reading from the client while too much body waits unread (flow control both ways).
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any
from urllib.parse import unquote_to_bytes

from prun.runtime.http.exchange import Exchange
from prun.runtime.http.protocol import HttpProtocol
from prun.runtime.http.settings import HIGH_WATER, LOW_WATER


class WsgiInput:
    """wsgi.input: a blocking, read-only stream of the request body.

    Made only for a request that has a body; a request without one gets an empty io.BytesIO.
    """

    def __init__(self, ex: WsgiExchange) -> None:
        self._ex: WsgiExchange | None = ex  # None once the app's call is over (no cycle left behind)
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._eof = False
        self._asked = False

    # loop side
    def feed(self, data: bytes) -> int:
        with self._cond:
            self._buf += data
            self._cond.notify_all()
            return len(self._buf)

    def end(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # app side
    def detach(self) -> None:
        """The app's call is over: a stray read later gets what is buffered, never waits."""
        with self._cond:
            self._ex = None
            self._eof = True

    def _wait(self, ready: Any) -> None:
        ex = self._ex
        if ex is None:
            return
        if not self._asked:
            self._asked = True
            ex.call(ex.send_continue)
        while not ready() and not self._eof:
            if ex.proto.read_paused:
                # The reader needs more than is buffered: read from the client again, whatever the level.
                ex.call(ex.proto.maybe_resume_reading, True)
            self._cond.wait()

    def _took(self, data: bytes) -> bytes:
        ex = self._ex
        if ex is not None:
            ex.buffered = len(self._buf)
            if ex.proto.read_paused and ex.buffered < LOW_WATER:
                ex.call(ex.proto.maybe_resume_reading)
        return data

    def read(self, size: int | None = -1) -> bytes:
        with self._cond:
            if size is None or size < 0:
                self._wait(lambda: False)
                data = bytes(self._buf)
                self._buf.clear()
            else:
                self._wait(lambda: len(self._buf) >= size)
                data = bytes(self._buf[:size])
                del self._buf[:size]
            return self._took(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        with self._cond:
            self._wait(lambda: b"\n" in self._buf or (limit is not None and len(self._buf) >= limit))
            end = self._buf.find(b"\n") + 1 or len(self._buf)
            if limit is not None:
                end = min(end, limit)
            data = bytes(self._buf[:end])
            del self._buf[:end]
            return self._took(data)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> WsgiInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class WsgiExchange(Exchange):
    """A request served by a WSGI app on a pool thread."""

    __slots__ = ("input", "wsgi_status", "head_requested", "app_failed", "waiting_body")
    proto: HttpProtocol

    def __init__(self, proto: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool) -> None:
        super().__init__(proto, scope, keep_alive, expect)
        # The body's stream, made when a body is expected (wsgi_input); it and this exchange refer to each
        # other until the app's call ends (finish_call).
        self.input: WsgiInput | None = None
        self.wsgi_status: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
        self.head_requested = False
        self.app_failed: BaseException | None = None
        self.waiting_body = False  # run() waits for the body (up to HIGH_WATER) before taking a thread

    def call(self, fn: Any, *args: Any) -> None:
        self.proto.loop.call_soon_threadsafe(fn, *args)

    # -- loop side --------------------------------------------------------------------------------

    def run(self) -> None:
        if not self.body_complete and not self.expect and self.small_body():
            # A body of known length up to HIGH_WATER is read before the app takes a thread: a client
            # trickling it would otherwise hold one of the pool's few threads. Until then the body is
            # timed like the head (--timeout-request-header). Chunked and larger bodies stream to the app.
            self.waiting_body = True
            self.proto.head_since = self.proto.shared.clock
            return
        self.dispatch()

    def small_body(self) -> bool:
        for name, value in self.scope["headers"]:
            if name == b"content-length":
                return int(value) <= HIGH_WATER
        return False

    def dispatch(self) -> None:
        """Call the app on a pool thread."""
        if self.waiting_body:
            self.waiting_body = False
            self.proto.head_since = 0.0
        shared = self.proto.shared
        limit = self.proto.settings.limit_concurrency
        if limit and shared.active >= limit:
            self.answer_error(503)
            return
        shared.active += 1
        assert shared.executor is not None
        try:
            shared.executor.submit(self.call_app, self.environ())
        except RuntimeError as exc:  # the pool is shut down: the worker is stopping
            self.app_done(exc)

    def feed(self, body: bytes) -> None:
        if self.finished or self.disconnected:
            return
        if self.input is None:
            self.input = WsgiInput(self)
        self.buffered = self.input.feed(body)
        if self.buffered > HIGH_WATER:
            self.proto.pause_reading()
            if self.waiting_body:
                self.dispatch()

    def complete(self) -> None:
        self.body_complete = True
        if self.input is not None:
            self.input.end()
        if self.waiting_body:
            self.dispatch()

    def disconnect(self) -> None:
        self.disconnected = True
        if self.input is not None:
            self.input.end()

    def wsgi_input(self) -> WsgiInput | io.BytesIO:
        """The request's wsgi.input: a WsgiInput while a body is or may be coming, else an empty stream."""
        if self.input is None:
            if self.disconnected or (self.body_complete and not self.expect):
                return io.BytesIO()  # (a stream made after disconnect() would never be ended)
            self.input = WsgiInput(self)
        return self.input

    def write_from_app(self, data: bytes, more: bool) -> None:
        if self.finished or self.disconnected:
            return
        try:
            if not self.started:
                assert self.wsgi_status is not None
                status, headers, reason = self.wsgi_status
                self.start(status, headers, reason)
            self.write(data, more)
        except Exception as exc:  # noqa: BLE001 - a bad status, header or length: the app's error
            self.app_failed = exc

    def when_writable(self, event: threading.Event) -> None:
        proto = self.proto
        if not proto.write_paused or proto.closed:
            event.set()
            return
        waiter = proto.loop.create_future()
        waiter.add_done_callback(lambda _: event.set())
        proto.drain_waiters.append(waiter)

    def environ(self) -> dict[str, Any]:
        scope = self.scope
        settings = self.proto.settings
        root = settings.root_path_bytes
        raw = scope["raw_path"][len(root) :]
        if root and raw.startswith(root) and raw[len(root) : len(root) + 1] in (b"", b"/", b"?"):
            # The proxy in front passed the prefix on: it belongs in SCRIPT_NAME, not twice in the path.
            raw = raw[len(root) :]
        host, port = scope["server"] or ("localhost", 80)
        if port is None:  # a unix socket
            host, port = "localhost", 80
        env: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": settings.root_path,
            "PATH_INFO": unquote_to_bytes(raw).decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope["scheme"],
            "wsgi.input": self.wsgi_input(),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }
        client = scope["client"]
        if client:
            env["REMOTE_ADDR"] = client[0]
            env["REMOTE_PORT"] = str(client[1])
        for name, value in scope["headers"]:
            text = value.decode("latin-1")
            if name == b"content-type":
                env["CONTENT_TYPE"] = text
            elif name == b"content-length":
                env["CONTENT_LENGTH"] = text
            elif b"_" in name:
                continue  # "x_a" and "x-a" would both become HTTP_X_A: drop the ambiguous spelling
            else:
                key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
                if key in env:
                    env[key] += ("; " if key == "HTTP_COOKIE" else ",") + text
                else:
                    env[key] = text
        return env

    # -- app thread -------------------------------------------------------------------------------

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.head_requested:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.wsgi_status is not None:
            raise RuntimeError("start_response was called twice without exc_info")
        code = int(status[:3])
        reason = status[4:].strip().encode("latin-1")
        self.wsgi_status = (code, [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers], reason)
        return self.legacy_write

    def send(self, data: bytes, more: bool) -> None:
        if self.wsgi_status is None:
            raise RuntimeError("the app sent a body before calling start_response")
        self.head_requested = True
        self.call(self.write_from_app, data, more)
        if more and self.proto.write_paused and not self.disconnected:
            event = threading.Event()
            self.call(self.when_writable, event)
            event.wait()

    def legacy_write(self, data: bytes) -> None:
        """The write() callable start_response returns (PEP 3333's imperative API)."""
        if data:
            self.send(bytes(data), True)

    def call_app(self, environ: dict[str, Any]) -> None:
        error: BaseException | None = None
        try:
            result = self.proto.shared.app(environ, self.start_response)
            try:
                if type(result) is list or type(result) is tuple:
                    # The whole body is known: one write, with a Content-Length.
                    self.send(b"".join(result), False)
                else:
                    # A streamed body (a generator, Flask's stream_with_context, server-sent events):
                    # each chunk goes out as soon as the app yields it.
                    for chunk in result:
                        if not chunk:
                            continue
                        if self.disconnected:
                            break
                        self.send(bytes(chunk), True)
                    self.send(b"", False)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # noqa: BLE001 - reported as the app's failure
            error = exc
        self.call(self.finish_call, error)

    def finish_call(self, error: BaseException | None) -> None:
        if self.input is not None:
            self.input.detach()
        self.app_done(error or self.app_failed)
