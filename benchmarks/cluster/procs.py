"""Every process the benchmarks start, and how each server is started, reloaded, observed and stopped.

Each server runs in its own session (process group), so stopping it kills its whole tree. Every
process started here is registered and killed at exit, on error and on Ctrl-C alike.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

APPS = Path(__file__).parent / "apps"
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


signal.signal(signal.SIGTERM, _on_term)
signal.signal(signal.SIGHUP, _on_term)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
    """One GET on a new connection: (status, worker pid)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
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


class Server:
    """A server under test: started on `port` with `instances` workers serving apps/tiny."""

    name = "server"
    label = "server"
    ready_method = "log lines"
    reload_method = "SIGHUP"
    supports_reload = True

    def __init__(self, instances: int, port: int | None = None) -> None:
        self.instances = instances
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.out: Output | None = None
        self.started_at = 0.0

    # -- to define per server --
    def command(self) -> list[str]:
        raise NotImplementedError

    def worker_procs(self) -> list[psutil.Process]:
        return [c for c in self.children() if self.is_worker(c)]

    def is_worker(self, proc: psutil.Process) -> bool:
        return True

    def ready_pattern(self) -> str:
        raise NotImplementedError

    def ready_count(self) -> int:
        return self.instances

    # -- shared --
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PORT", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> float:
        """Start; the monotonic time the command was launched."""
        self.started_at = time.monotonic()
        self.proc = REGISTRY.popen(self.command(), cwd=str(APPS), env=self.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.out = Output(self.proc.stdout)
        return self.started_at

    @property
    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def master(self) -> psutil.Process:
        return psutil.Process(self.master_pid)

    def children(self) -> list[psutil.Process]:
        try:
            return [c for c in self.master().children() if c.status() != psutil.STATUS_ZOMBIE]
        except psutil.Error:
            return []

    def worker_pids(self) -> set[int]:
        pids = set()
        for proc in self.worker_procs():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    pids.add(proc.pid)
            except psutil.Error:
                pass
        return pids

    def prepare(self) -> None:
        """Whatever must run before the server is started and timed (PM2: its daemon)."""

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until every worker is ready (the server's own log lines); the monotonic time it was."""
        assert self.out is not None
        stamp, _ = self.out.wait(self.ready_pattern(), timeout, count=self.ready_count())
        return stamp

    def wait_serving(self, timeout: float = 30.0) -> float:
        """Wait until a GET / answers 200; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if get(self.port, timeout=1.0)[0] == 200:
                    return time.monotonic()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: no 200 on :{self.port} within {timeout:g}s; "
                                   f"{self.out.tail() if self.out else ''}")
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}: "
                                   f"{self.out.tail() if self.out else ''}")
            time.sleep(0.005)

    def reload(self, timeout: float = 30.0) -> dict[str, float]:
        """Reload and wait until the last old worker is gone (and as many workers run again)."""
        old = self.worker_pids()
        began = time.monotonic()
        os.kill(self.master_pid, signal.SIGHUP)
        self._wait_old_gone(old, began, timeout)
        return {"seconds": time.monotonic() - began}

    def _wait_old_gone(self, old: set[int], began: float, timeout: float) -> None:
        deadline = began + timeout
        while True:
            current = self.worker_pids()
            if not (current & old) and len(current) >= self.instances:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: reload not done after {timeout:g}s "
                                   f"(old {sorted(old)}, now {sorted(current)})")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            REGISTRY.kill_tree(self.proc, graceful=3.0)
            self.proc = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prun(Server):
    reload_method = "SIGHUP (prun's 'reload complete' line)"
    ready_method = "prun's `ready: N workers` line"

    def __init__(self, instances: int, port: int | None = None, balance: str = "shared") -> None:
        super().__init__(instances, port)
        self.balance = balance
        self.name = f"prun-{balance}"
        self.label = f"prun --balance {balance}"

    def command(self) -> list[str]:
        exe = shutil.which("prun")
        base = [exe] if exe else [sys.executable, "-c", "from cluster.cli import main; main()"]
        return base + ["tiny:app", "-i", str(self.instances), "-b", f"127.0.0.1:{self.port}",
                       "--balance", self.balance, "--graceful-timeout", "10", "--chdir", str(APPS)]

    def is_worker(self, proc: psutil.Process) -> bool:
        try:
            return " ".join(proc.cmdline()).startswith("prun worker")
        except psutil.Error:
            return False

    def ready_pattern(self) -> str:
        return r"prun: ready: \d+ workers"

    def ready_count(self) -> int:
        return 1

    def reload(self, timeout: float = 30.0) -> dict[str, float]:
        assert self.out is not None
        old = self.worker_pids()
        mark = self.out.mark()
        began = time.monotonic()
        os.kill(self.master_pid, signal.SIGHUP)
        stamp, match = self.out.wait(r"reload (complete: .* in ([\d.]+)s|failed.*)", timeout, start=mark)
        if match.group(2) is None:
            raise RuntimeError(f"{self.label}: {match.group(0)}")
        self._wait_old_gone(old, began, timeout)
        return {"seconds": stamp - began, "reported": float(match.group(2))}


class KillRestart(Prun):
    """The negative control: a 'reload' that SIGKILLs the whole prun tree and starts it again."""

    reload_method = "SIGKILL of the whole tree, then a fresh start"

    def __init__(self, instances: int, port: int | None = None) -> None:
        super().__init__(instances, port, "shared")
        self.name = "control-kill-restart"
        self.label = "control: prun killed and restarted"

    def reload(self, timeout: float = 30.0) -> dict[str, float]:
        began = time.monotonic()
        assert self.proc is not None
        REGISTRY.kill_tree(self.proc)
        self.start()
        self.wait_ready(timeout)
        return {"seconds": time.monotonic() - began}


class Uvicorn(Server):
    name = "uvicorn"
    label = "uvicorn --workers"
    ready_method = "N 'Application startup complete' lines"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "tiny:app", "--workers", str(self.instances), "--http", "httptools",
                "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(self.port), "--app-dir", str(APPS),
                "--timeout-graceful-shutdown", "10", "--no-access-log"]

    def is_worker(self, proc: psutil.Process) -> bool:
        try:
            return "spawn_main" in " ".join(proc.cmdline())
        except psutil.Error:
            return False

    def ready_pattern(self) -> str:
        return r"Application startup complete"


class Gunicorn(Server):
    name = "gunicorn"
    label = "gunicorn -k uvicorn.workers.UvicornWorker"
    ready_method = "N 'Application startup complete' lines"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "tiny:app", "-k", "uvicorn.workers.UvicornWorker",
                "-w", str(self.instances), "-b", f"127.0.0.1:{self.port}", "--chdir", str(APPS),
                "--graceful-timeout", "10", "--no-control-socket"]

    def ready_pattern(self) -> str:
        return r"Application startup complete"


class Granian(Server):
    name = "granian"
    label = "granian --interface asgi"
    ready_method = "N 'Started worker-' lines"

    def command(self) -> list[str]:
        exe = shutil.which("granian") or "granian"
        return [exe, "--interface", "asgi", "--workers", str(self.instances), "--host", "127.0.0.1",
                "--port", str(self.port), "--working-dir", str(APPS), "--workers-kill-timeout", "10",
                # granian sleeps --respawn-interval (3.5 s by default) between the workers it replaces
                # on SIGHUP; 0.5 s keeps a run of 20 reloads within minutes
                "--respawn-interval", "0.5", "tiny:app"]

    def is_worker(self, proc: psutil.Process) -> bool:
        try:
            return " ".join(proc.cmdline()).rstrip().split(" ")[-1].startswith("worker-")
        except psutil.Error:
            return False

    def ready_pattern(self) -> str:
        return r"Started worker-"


PM2_DIR = Path(os.environ.get("PRUN_BENCH_PM2_DIR", "/tmp/prun-bench-pm2"))


def pm2_binary() -> tuple[str | None, str]:
    """The pm2 CLI, installed into PM2_DIR with npm when missing; (path or None, why not)."""
    local = PM2_DIR / "node_modules" / ".bin" / "pm2"
    if local.exists():
        return str(local), ""
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node or npm is not installed"
    PM2_DIR.mkdir(parents=True, exist_ok=True)
    print(f"installing pm2 into {PM2_DIR} with npm ...", file=sys.stderr)
    try:
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(PM2_DIR), "pm2"],
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        return None, "npm install pm2 timed out"
    if done.returncode != 0 or not local.exists():
        return None, f"npm install pm2 failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"
    return str(local), ""


class PM2(Server):
    """The Node app (apps/tiny.js) in PM2's cluster mode, with a private PM2_HOME."""

    name = "pm2"
    label = "PM2 cluster mode (Node)"
    ready_method = "distinct worker pids answering"
    reload_method = "pm2 reload"
    app_name = "prun-bench-tiny"

    def __init__(self, instances: int, port: int | None = None) -> None:
        super().__init__(instances, port)
        exe, why = pm2_binary()
        if exe is None:
            raise Unavailable(why)
        self.exe = exe
        self.home = tempfile.mkdtemp(prefix="prun-bench-pm2-home-")
        self._daemon_pid: int | None = None
        REGISTRY.on_exit(self._kill_daemon)

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PM2_HOME"] = self.home
        env["PORT"] = str(self.port)
        return env

    def pm2(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run([self.exe, *args], cwd=str(APPS), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"pm2 {' '.join(args)} failed: {done.stderr.strip()[-300:]}")
        return done.stdout

    def prepare(self) -> None:
        self.pm2("ping")
        self._daemon_pid = self._read_daemon_pid()

    def start(self) -> float:
        self.started_at = time.monotonic()
        self.pm2("start", str(APPS / "tiny.js"), "-i", str(self.instances), "--name", self.app_name)
        self._daemon_pid = self._read_daemon_pid()
        return self.started_at

    def _read_daemon_pid(self) -> int | None:
        try:
            return int(Path(self.home, "pm2.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def master_pid(self) -> int:
        pid = self._daemon_pid or self._read_daemon_pid()
        if pid is None:
            raise RuntimeError("pm2 daemon pid unknown")
        return pid

    def jlist(self) -> list[dict]:
        return json.loads(self.pm2("jlist") or "[]")

    def worker_pids(self) -> set[int]:
        try:
            return {int(p["pid"]) for p in self.jlist() if p.get("pid") and alive(int(p["pid"]))}
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            return set()

    def worker_procs(self) -> list[psutil.Process]:
        procs = []
        for pid in self.worker_pids():
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        return procs

    def wait_ready(self, timeout: float = 30.0) -> float:
        """The time `instances` distinct worker pids have answered."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while len(seen) < self.instances:
            try:
                status, pid = get(self.port, timeout=1.0)
                if status == 200:
                    seen.add(pid)
            except OSError:
                time.sleep(0.005)
            if time.monotonic() > deadline:
                raise TimeoutError(f"pm2: only {len(seen)} workers answered within {timeout:g}s")
        return time.monotonic()

    def reload(self, timeout: float = 30.0) -> dict[str, float]:
        old = self.worker_pids()
        began = time.monotonic()
        self.pm2("reload", self.app_name, timeout=timeout)
        command_done = time.monotonic() - began
        self._wait_old_gone(old, began, timeout)
        return {"seconds": time.monotonic() - began, "command": command_done}

    def stop(self) -> None:
        self._kill_daemon()

    def _kill_daemon(self) -> None:
        if not Path(self.home).exists():
            return
        pids = set()
        daemon = self._daemon_pid or self._read_daemon_pid()
        if daemon:
            pids.add(daemon)
            try:
                pids.update(c.pid for c in psutil.Process(daemon).children(recursive=True))
            except psutil.Error:
                pass
        try:
            subprocess.run([self.exe, "kill"], cwd=str(APPS), env=self.env(), capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        shutil.rmtree(self.home, ignore_errors=True)


class Unavailable(Exception):
    """A server that cannot run on this machine (the reason is reported, the run goes on)."""


def make(name: str, instances: int, port: int | None = None) -> Server:
    if name == "prun-shared":
        return Prun(instances, port, "shared")
    if name == "prun-leastconn":
        return Prun(instances, port, "leastconn")
    if name == "control-kill-restart":
        return KillRestart(instances, port)
    classes = {"uvicorn": Uvicorn, "gunicorn": Gunicorn, "granian": Granian, "pm2": PM2}
    return classes[name](instances, port)


SERVERS = ["prun-shared", "prun-leastconn", "uvicorn", "gunicorn", "granian", "pm2"]


def run_load(port: int, out: Path, *, mode: str = "keepalive", concurrency: int = 16, rate: float = 0.0,
             path: str = "/", duration: float = 60.0, timeout: float = 5.0) -> subprocess.Popen:
    """Start the load client as its own process; it stops at `duration` or on SIGINT."""
    cmd = [sys.executable, "-m", "benchmarks.cluster.load", "--port", str(port), "--mode", mode,
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
