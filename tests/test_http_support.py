"""Serving an app in-process (a uvloop loop in a thread) and talking raw HTTP/1.1 to it, for the HTTP tests."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvloop

from prun.runtime.http import make_http_server
from prun.runtime.options import WorkerOptions


class ServerThread:
    """make_http_server(app) on its own loop and thread, listening on 127.0.0.1 on an ephemeral port."""

    def __init__(self, app: Any, interface: str = "asgi", listener: socket.socket | None = None, **options: Any) -> None:
        self.options = WorkerOptions(**options)
        self.loop = uvloop.new_event_loop()
        if listener is None:  # the "master's" listener; the server gets its own copy, as a worker does
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self.listener: socket.socket | None = listener
        else:
            self.listener = None  # owned by the caller
        self.sock = listener.dup()
        self.port = self.sock.getsockname()[1]
        self.server = make_http_server(app, interface, self.options, self.loop)
        self.changes = 0
        self.limit_hits = 0
        self.server.on_change = self._changed
        self.server.on_limit = self._limited
        self._booted: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _changed(self) -> None:
        self.changes += 1

    def _limited(self) -> None:
        self.limit_hits += 1

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.startup())
            self.loop.run_until_complete(self.server.serve([self.sock]))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self._booted.set_exception(exc)
            return
        self._booted.set_result(None)
        self.loop.run_forever()

    def start(self) -> ServerThread:
        self._thread.start()
        self._booted.result(10)
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the server's loop and return its result."""
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(10)

    def wait_no_connections(self, within: float) -> bool:
        """Whether the server has no open connection (it saw every close) within `within` seconds."""
        deadline = time.monotonic() + within
        while self.call(lambda: len(self.server.shared.protocols)):  # type: ignore[attr-defined]
            if time.monotonic() >= deadline:
                return False
        return True

    @contextmanager
    def counting_tasks(self) -> Iterator[list[Any]]:
        """The coroutines of every Task the server's loop creates meanwhile."""
        created: list[Any] = []

        def factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
            created.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs)

        self.call(self.loop.set_task_factory, factory)
        try:
            yield created
        finally:
            self.call(self.loop.set_task_factory, None)

    def drain(self, timeout: float) -> Future[None]:
        """Start draining; returns once the server is draining, with a future for the end of the drain."""
        done = asyncio.run_coroutine_threadsafe(self.server.drain(timeout), self.loop)
        while not self.call(lambda: self.server.draining) and not done.done():  # type: ignore[attr-defined]
            pass
        return done  # type: ignore[return-value]

    def stop(self) -> None:
        booted = self._booted.done() and self._booted.exception() is None
        if booted and self._thread.is_alive():
            try:
                if not self.server.draining:  # type: ignore[attr-defined]
                    self.drain(1.0).result(10)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)
        elif self._thread.ident is not None:
            self._thread.join(10)  # the boot failed: the thread is ending by itself, its loop no longer runs
        if not self.loop.is_running():
            self.loop.close()
        if self._booted.done() and self._booted.exception() is None:
            self.sock.detach()  # the server closed its copy
        else:
            self.sock.close()
        if self.listener is not None:
            self.listener.close()


@contextmanager
def collector_off() -> Iterator[Callable[[type], int]]:
    """The garbage collector disabled meanwhile (after a collection); yields a count of live objects of a
    type, so that a test can tell what is freed by reference counting alone."""
    gc.collect()
    gc.disable()
    try:
        yield lambda cls: sum(1 for obj in gc.get_objects() if type(obj) is cls)
    finally:
        gc.enable()


@contextmanager
def serving(app: Any, interface: str = "asgi", **options: Any) -> Iterator[ServerThread]:
    server = ServerThread(app, interface, **options)  # listener=... shares a listener between servers
    try:
        yield server.start()
    finally:
        server.stop()


class Response:
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.header_list = headers
        self.headers = {k: v for k, v in headers}
        self.body = body


class Client:
    """A raw HTTP/1.1 connection: send bytes, read responses one by one."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str = "/", headers: str = "") -> Response:
        self.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        return self.read()

    def read(self, head: bool = False) -> Response:
        line = self.file.readline()
        if not line:
            raise EOFError("the server closed the connection")
        version, status, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        assert version == "HTTP/1.1", line
        headers = []
        while True:
            raw = self.file.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        code = int(status)
        found = dict(headers)
        if head or code < 200 or code in (204, 304):
            body = b""
        elif "content-length" in found:
            body = self.file.read(int(found["content-length"]))
        elif found.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int(self.file.readline().split(b";")[0], 16)
                if size == 0:
                    while self.file.readline() not in (b"\r\n", b""):
                        pass
                    break
                parts.append(self.file.read(size))
                self.file.readline()
            body = b"".join(parts)
        else:
            body = self.file.read()
        return Response(code, reason[0] if reason else "", headers, body)

    def send_until_blocked(self, limit: int, chunk: bytes = b"x" * (1 << 20)) -> int:
        """Send `chunk`s until sending blocks for 0.5 s (the server stopped reading); the bytes sent."""
        self.sock.settimeout(0.5)
        sent = 0
        try:
            while sent < limit:
                self.sock.sendall(chunk)
                sent += len(chunk)
        except TimeoutError:
            self.sock.settimeout(10)
            return sent
        raise AssertionError(f"sending {limit} bytes never blocked: the server read everything")

    def keep_sending(self, chunk: bytes = b"x" * (1 << 20)) -> None:
        """Send `chunk`s from a thread until the connection fails or closes."""

        def pump() -> None:
            try:
                while True:
                    self.sock.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=pump, daemon=True).start()

    def closed_by_server(self) -> bool:
        """True when the server has closed its side (EOF or reset) with nothing more to read."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True


def ok(body: bytes = b"ok", status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    """A tiny ASGI app answering every http request with `body`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})

    return app


if sys.version_info >= (3, 11):
    app_timeout = asyncio.timeout
else:

    @asynccontextmanager
    async def app_timeout(delay: float) -> AsyncIterator[None]:
        """asyncio.timeout (3.11+) for the apps of tests on Python 3.10: the same cancel scope on the current task.

        Like asyncio.timeout, it needs a current task (the one that must be running the app when the delay
        expires) and cancels that task, turning the cancellation into TimeoutError.
        """
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(delay, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()
