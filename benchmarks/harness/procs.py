"""Every process a benchmark starts: each in a session (process group) of its own, registered, and killed
at exit, on errors and on Ctrl-C (SIGTERM and SIGHUP too) alike; with the lines it prints and the ports it
is given.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


class Registry:
    """Started processes (by Popen) and extra cleanup steps, undone in reverse at exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.cleanups: list = []
        self._lock = threading.Lock()

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(cmd, **kwargs)
        with self._lock:
            self.procs.append(proc)
        return proc

    def kill_tree(self, proc: subprocess.Popen, graceful: float = 0.0) -> None:
        """Stop `proc` and everything in its process group (and its descendants that left it)."""
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if graceful and proc.poll() is None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(graceful)
            except subprocess.TimeoutExpired:
                pass
        _killpg(proc.pid, signal.SIGKILL)
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)

    def on_exit(self, fn) -> None:
        self.cleanups.append(fn)

    def cleanup(self) -> None:
        for proc in list(self.procs):
            self.kill_tree(proc)
        while self.cleanups:
            fn = self.cleanups.pop()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                print(f"cleanup: {exc!r}", file=sys.stderr)


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


REGISTRY = Registry()
atexit.register(REGISTRY.cleanup)


def _on_term(signum, frame):  # noqa: ANN001
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end a benchmark run as Ctrl-C does (every process started is then killed)."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str = "/", timeout: float = 2.0, ca: Path | None = None) -> tuple[int, str]:
    """One GET on a new connection (over TLS, trusting the CA certificate `ca`, when given): (status, worker pid)."""
    scheme = "https" if ca else "http"
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310 - loopback only
        resp.read()
        return resp.status, resp.headers.get("x-worker-pid", "?")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Output:
    """Lines a process prints (stdout and stderr merged), each with the monotonic time it was read."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:  # noqa: ANN001
        for line in stream:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def count(self, pattern: str, start: int = 0) -> int:
        regex = re.compile(pattern)
        with self.cond:
            return sum(1 for _t, line in self.lines[start:] if regex.search(line))

    def wait(self, pattern: str, timeout: float, start: int = 0, count: int = 1) -> tuple[float, re.Match]:
        """The time the `count`-th line matching `pattern` (from index `start`) was read, and its match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            index = start
            while True:
                while index < len(self.lines):
                    stamp, line = self.lines[index]
                    index += 1
                    match = regex.search(line)
                    if match:
                        seen += 1
                        if seen >= count:
                            return stamp, match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.thread.is_alive():
                    raise TimeoutError(f"no {count} lines matching {pattern!r} within {timeout:g}s; "
                                       f"last lines: {self.tail()}")
                self.cond.wait(min(remaining, 0.1))

    def tail(self, n: int = 8) -> str:
        return " | ".join(line for _t, line in self.lines[-n:])


def http_ok(port: int, path: str = "/", timeout: float = 1.0) -> bool:
    try:
        return get(port, path, timeout)[0] == 200
    except OSError:
        return False


def wait_port_free(port: int, timeout: float = 10.0) -> None:
    """Wait until nothing listens on `port` any more (a stopped server's socket is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)


def run_load(port: int, out: Path, *, mode: str = "keepalive", concurrency: int = 16, rate: float = 0.0,
             path: str = "/", duration: float = 60.0, timeout: float = 5.0) -> subprocess.Popen:
    """Start the load client as its own process; it stops at `duration` or on SIGINT."""
    cmd = [sys.executable, "-m", "benchmarks.harness.load", "--port", str(port), "--mode", mode,
           "--concurrency", str(concurrency), "--path", path, "--duration", str(duration),
           "--timeout", str(timeout), "--out", str(out)]
    if rate:
        cmd += ["--rate", str(rate)]
    return REGISTRY.popen(cmd, cwd=str(ROOT))


def finish_load(proc: subprocess.Popen, out: Path, timeout: float = 20.0) -> dict:
    """Stop the load client, wait for it, and read its result."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        REGISTRY.kill_tree(proc)
        raise RuntimeError("the load client did not stop") from None
    REGISTRY.kill_tree(proc)
    with open(out) as fh:
        return json.load(fh)
