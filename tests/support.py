"""Starting real prun masters in tests, and waiting on what they print, their pids and their ports."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psutil

APPS = Path(__file__).parent / "apps"
EXAMPLES = Path(__file__).parent.parent / "examples"


def prun_command() -> list[str]:
    """The prun installed beside the interpreter running the tests (not whichever is first on PATH)."""
    exe = os.path.join(os.path.dirname(sys.executable), "prun")
    return [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "prun.cluster"]


class Prun:
    """A prun master started with `args`; its merged stdout/stderr is collected line by line."""

    def __init__(self, *args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
                 wrapper: list[str] | None = None, command: list[str] | None = None, **popen: object) -> None:
        full_env = dict(os.environ)
        for variable in ("PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"):
            full_env.pop(variable, None)
        full_env.update(env or {})
        self.args = args
        self.wrapped = bool(wrapper)
        self.proc = subprocess.Popen(  # type: ignore[call-overload]
            (wrapper or []) + (command or prun_command()) + list(args),  # command: another installed prun
            cwd=str(cwd or APPS),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            **popen,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._known_workers: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """The first line from index `start` on matching `pattern`; fails after `timeout` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n{self.output}")
                self._cond.wait(min(remaining, 0.2))

    def mark(self) -> int:
        """An index for wait_for(start=...): only lines printed from now on."""
        with self._cond:
            return len(self.lines)

    def wait_ready(self, timeout: float = 20.0) -> int:
        """Wait for the first generation; the first listener's port."""
        port = int(self.wait_for(r"listening on (?:\S+):(\d+)", timeout).group(1))
        self.wait_for(r"ready: \d+ workers?", timeout)
        return port

    @property
    def master_pid(self) -> int:
        """The master's pid (under a wrapper such as unshare, the wrapper's child)."""
        if not self.wrapped:
            return self.pid
        return wait_until(lambda: next((c.pid for c in psutil.Process(self.pid).children()), None),
                          what="the master under its wrapper")

    def workers(self) -> dict[int, str]:
        """pid -> process title of each live worker."""
        found = {}
        try:
            children = psutil.Process(self.master_pid).children()
        except psutil.NoSuchProcess:
            return {}
        for child in children:
            try:
                title = " ".join(child.cmdline()).strip()
            except psutil.Error:
                continue
            if title.startswith("prun worker"):
                found[child.pid] = title
        self._known_workers.update(found)
        return found

    def reload(self, pattern: str = r"reload complete", timeout: float = 30.0) -> re.Match[str]:
        """Send HUP and wait for the line the reload ends with (by default, its completion)."""
        mark = self.mark()
        self.signal(signal.SIGHUP)
        return self.wait_for(pattern, timeout, start=mark)

    def wait_exit(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def signal(self, signum: int) -> None:
        os.kill(self.master_pid, signum)

    def cleanup(self) -> None:
        """Stop the master and every worker it had, whatever state the test left them in."""
        self.workers()
        if self.proc.poll() is None:
            # A stop first (an idle master ends in a few ms): processes that exit write their coverage data,
            # which a SIGKILL loses. One that does not end within a second is killed below.
            try:
                os.kill(self.master_pid, signal.SIGTERM)
                self.proc.wait(1)
            except (ProcessLookupError, AssertionError, psutil.Error, subprocess.TimeoutExpired):
                pass
        if self.wrapped and self.proc.poll() is None:
            try:
                os.kill(self.master_pid, signal.SIGKILL)
            except (ProcessLookupError, AssertionError, psutil.Error):
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for pid in self._known_workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.stdout:
            self._reader.join(2)
            self.proc.stdout.close()


@contextmanager
def running(*args: str, **kwargs: object) -> Iterator[Prun]:
    prun = Prun(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield prun
    finally:
        prun.cleanup()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def echo(port: int, line: bytes = b"ping\n", timeout: float = 5.0) -> bytes:
    """One line through a line-echo app on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(line)
        return sock.makefile("rb").readline()


class ClientThreads:
    """Client threads loading a server until stopped, counting the requests that succeeded and failed.

    A subclass's `client(index)` runs in each thread until `stopping` is set, and calls `succeeded()` or
    `failed_with(exc)` for each request. `lock` guards the counts (and whatever a subclass keeps with them).
    """

    join_seconds = 15.0  # how long stop() waits for each thread
    wait_seconds = 15.0  # wait_requests' default bound

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self: _Load) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(self.join_seconds)

    def client(self, index: int) -> None:
        raise NotImplementedError

    def succeeded(self) -> None:
        with self.lock:
            self.ok += 1

    def failed_with(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            self.errors.append(repr(exc))

    def wait_requests(self, count: int, timeout: float | None = None, what: str = "requests") -> None:
        start = self.ok
        wait_until(lambda: self.ok - start >= count, timeout or self.wait_seconds, what=f"{count} {what}")


_Load = TypeVar("_Load", bound=ClientThreads)


class EchoLoad(ClientThreads):
    """Clients hammering a line-echo app over keep-alive connections until stopped.

    Each connection carries up to `per_connection` requests, then the client opens a new one (as
    connection pools do). A request fails if connecting, sending or reading fails, or the reply differs.
    """

    def __init__(self, port: int, clients: int = 8, per_connection: int = 100, max_seconds: float = 120.0) -> None:
        super().__init__(port, clients)
        self.per_connection = per_connection
        self.max_seconds = max_seconds

    def client(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    reader = sock.makefile("rb")
                    for _ in range(self.per_connection):
                        if self.stopping.is_set():
                            break
                        n += 1
                        payload = f"client {index} request {n}\n".encode()
                        sock.sendall(payload)
                        if reader.readline() != payload:
                            raise ConnectionError("wrong or missing reply")
                        self.succeeded()
            except OSError as exc:
                self.failed_with(exc)

    def wait_requests(self, count: int, timeout: float | None = None, what: str = "echo requests") -> None:
        super().wait_requests(count, timeout, what)


class KeepAliveLoad(ClientThreads):
    """Threads sending keep-alive requests as fast as they can; a request fails on any error or non-200.

    Half the clients ask for `/`, half for `/slow`; the app answers `pong`.
    """

    body = b"pong"

    def __init__(self, port: int, clients: int = 8) -> None:
        super().__init__(port, clients)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def path(self, index: int) -> str:
        return "/slow" if index % 2 else "/"

    def fresh(self, index: int) -> bool:
        """Whether this client opens a new connection for every request."""
        return False

    def client(self, index: int) -> None:
        conn = self.connect()
        path, fresh = self.path(index), self.fresh(index)
        while not self.stopping.is_set():
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or body != self.body:
                    raise ValueError(f"{response.status} {body[:50]!r}")
                if response.will_close or fresh:
                    conn.close()  # Connection: close from a draining worker: reconnect, as clients do
                self.succeeded()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                self.failed_with(exc)
        conn.close()


class LoneWorker:
    """The one worker of a master, as a flood test checks it: its pid, RSS and fd count before the flood,
    and after it (the same pid, RSS grown less than a bound, the fds back to where they were)."""

    def __init__(self, master: Prun) -> None:
        (pid,) = master.workers()
        self.master = master
        self.pid = pid
        self.proc = psutil.Process(pid)
        self.rss = self.proc.memory_info().rss
        self.fds = self.proc.num_fds()

    def grown(self) -> int:
        """Bytes of RSS gained since the baseline."""
        return self.proc.memory_info().rss - self.rss

    def check(self, max_growth: int, what: str) -> int:
        """The worker lived through `what` within `max_growth` bytes of RSS and gave its fds back; its growth."""
        grown = self.grown()
        assert set(self.master.workers()) == {self.pid}, f"the worker was replaced after {what}"
        assert grown < max_growth, f"{what}: the worker grew {grown / 2**20:.1f} MiB (bound {max_growth / 2**20:.0f} MiB)"
        wait_until(lambda: self.proc.num_fds() <= self.fds, timeout=15,
                   what=f"the worker's fds back to {self.fds} after {what}")
        return grown
