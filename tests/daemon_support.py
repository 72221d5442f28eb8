"""The daemon tests' helpers: a temporary PRUN_HOME, the CLI run against it, HTTP load, and a cleanup that
leaves no daemon, master, holder or worker behind whatever the test did."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from prun.cluster.client import Client
from tests.support import APPS, ClientThreads, prun_command, wait_until


class Home:
    """A PRUN_HOME of its own (short: Unix socket paths are limited to 108 bytes)."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="prun-t-", dir="/tmp")
        self.path = os.path.join(self.root, "h")
        # SPT_NOENV: setproctitle leaves /proc/PID/environ alone, so that ours() can read PRUN_HOME back
        self.env = dict(os.environ, PRUN_HOME=self.path, SPT_NOENV="1")
        self.env.pop("PORT", None)

    def prun(self, *args: str, check: bool = True, timeout: float = 120, cwd: str | Path = APPS,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(prun_command() + list(args), cwd=str(cwd), env=dict(self.env, **(env or {})),
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"prun {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def ls(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.prun("ls", "--json").stdout)
        return rows

    def app(self, name: str) -> dict[str, Any]:
        return next(row for row in self.ls() if row["name"] == name)

    def port(self, name: str) -> int:
        return int(self.app(name)["listen"][0].rsplit(":", 1)[1])

    def daemon_pid(self) -> int | None:
        try:
            return int(Path(self.path, "daemon.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def ours(self) -> list[psutil.Process]:
        """Every live process started under this home (they all carry PRUN_HOME in their environment)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("PRUN_HOME") == self.path:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def family(self) -> list[psutil.Process]:
        """The daemon and every process under it now: its listener holders and log writers keep only a few
        variables of their environment (no SPT_NOENV), so ours() cannot see them once they set their title."""
        pid = self.daemon_pid()
        try:
            daemon = psutil.Process(pid) if pid else None
            return [daemon, *daemon.children(recursive=True)] if daemon else []
        except psutil.Error:
            return []

    def cleanup(self) -> None:
        family = self.family()
        try:
            if self.daemon_pid():
                self.prun("kill", check=False, timeout=60)
        except subprocess.TimeoutExpired:
            pass

        def running(proc: psutil.Process) -> bool:
            try:
                return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                return False

        def left() -> list[psutil.Process]:
            return self.ours() + [proc for proc in family if running(proc)]

        for proc in left():
            try:
                proc.send_signal(signal.SIGKILL)  # (psutil: never a pid reused since)
            except psutil.Error:
                pass
        wait_until(lambda: not left(), timeout=10, what="every process of the test's PRUN_HOME to exit")
        shutil.rmtree(self.root, ignore_errors=True)


def request(home: Home, payload: bytes) -> dict[str, Any]:
    """One raw line to the daemon's RPC socket, as another program would send it; the reply (after the progress
    lines the daemon sends while it works on it)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(os.path.join(home.path, "rpc.sock"))
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered and closed before reading it all (an oversized message)
        lines = sock.makefile("rb")
        reply: dict[str, Any] = json.loads(lines.readline())
        while "progress" in reply:
            reply = json.loads(lines.readline())
        return reply


def call(home: Home, command: str, **args: Any) -> dict[str, Any]:
    """One request to the daemon, built from `command` and `args`; the whole reply (result or error)."""
    return request(home, json.dumps({"id": 1, "command": command, "args": args}).encode() + b"\n")


def free_port() -> int:
    """A loopback port nothing listens on now (for an app that must get the same port again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str = "/", timeout: float = 10.0) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, response.status
        return response.read().decode()
    finally:
        conn.close()


class HttpLoad(ClientThreads):
    """Clients sending GETs, a new connection each (a refused connection is a failure), until stopped."""

    join_seconds = 30.0
    wait_seconds = 20.0

    def __init__(self, port: int, clients: int = 4) -> None:
        super().__init__(port, clients)
        self.bodies: list[str] = []

    def client(self, index: int) -> None:
        deadline = time.monotonic() + 120
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                body = get(self.port, timeout=30)
                with self.lock:
                    self.ok += 1
                    self.bodies.append(body)
            except (OSError, AssertionError, http.client.HTTPException) as exc:
                self.failed_with(exc)


STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(999)"


def start_stubborn(home: Home, graceful: int) -> None:
    """Start `stubborn`, a fork-mode app that ignores SIGTERM (stopping it takes its whole graceful timeout),
    and wait until it has set SIGTERM aside."""
    home.prun("start", f"{sys.executable} -c {shlex.quote(STUBBORN)}", "--name", "stubborn",
              "--graceful-timeout", str(graceful), "--kill-signal", "SIGTERM")
    stubborn_started(home, 1)


def stubborn_started(home: Home, times: int) -> None:
    """Wait until `stubborn` has started `times` times (each has then set SIGTERM aside)."""
    log = os.path.join(home.path, "logs", "stubborn-out.log")
    wait_until(lambda: os.path.exists(log) and open(log).read().count("up\n") >= times,
               what=f"stubborn to start {times} times")


class Events:
    """Collects a subscription's events in a thread."""

    def __init__(self, client: Client) -> None:
        self.events: list[dict[str, Any]] = []
        self.stream = client.subscribe()
        next_event = self.stream.__next__  # subscribes now, before the test acts
        self.first: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, args=(next_event,), daemon=True)
        self._thread.start()

    def _read(self, next_event: Any) -> None:
        try:
            while True:
                self.events.append(next_event())
        except (StopIteration, OSError, ValueError):
            pass

    def kinds(self, app: str) -> list[str]:
        return [e["event"] for e in list(self.events) if e.get("app") == app]

    def wait(self, app: str, kind: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_until(
            lambda: next((e for e in list(self.events) if e.get("app") == app and e["event"] == kind), None),
            what=f"event {kind} of {app}")
        return found
