"""How each server under test is started, reloaded, observed and stopped, on any app of benchmarks/apps.

    prun             prun run APP --balance B (the default balance unless a name says otherwise)
    prun-shared      prun run APP --balance shared
    prun-leastconn   prun run APP --balance leastconn
    prun-base        another install of prun (PRUN_BENCH_BASE: its `prun` executable, e.g. a checkout of the
                     commit before a change, in a venv of its own; PRUN_BENCH_BASE_LABEL: what to call it),
                     beside this one in the same rounds
    uvicorn          uvicorn --http httptools --loop uvloop [--workers N]
    uvicorn-websockets, uvicorn-wsproto, uvicorn-websockets-sansio   uvicorn with that --ws
    gunicorn         gunicorn -k uvicorn.workers.UvicornWorker -w N
    granian          granian --interface asgi --workers N
    gunicorn-gthread gunicorn -k gthread --threads 8 -w N (WSGI)
    granian-wsgi     granian --interface wsgi --workers N (WSGI)
    pm2              PM2's cluster mode running apps/tiny.js (Node), whatever the app
    control-kill-restart  prun, "reloaded" by SIGKILL of its tree and a fresh start (a negative control)

`cpus` pins the whole tree of a server (master and workers: `taskset -c` before the command, inherited by
every process it starts); the scenarios record the affinity each process had. `tls` (a tls.Certificate)
serves HTTPS with it (each server's own options; the readiness check then speaks TLS); `ws` asks for a
WebSocket implementation by the server's own name for it (prun `--ws auto`, uvicorn `--ws wsproto`, granian
`--ws`), where the default might differ.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.harness.procs import REGISTRY, Output, alive, free_port, get
from benchmarks.harness.tls import Certificate

APPS = Path(__file__).resolve().parents[1] / "apps"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class App:
    """An app every server can serve: MODULE:ATTR in a directory, ASGI or WSGI."""

    target: str
    interface: str = "asgi"
    directory: Path = APPS
    needs: str | None = None  # a module the app imports (e.g. "fastapi"): without it the app is skipped

    def missing(self) -> str | None:
        """Why this app cannot run here (its framework is not installed), or None."""
        import importlib.util

        if self.needs and importlib.util.find_spec(self.needs) is None:
            return f"{self.needs} is not installed (pip install -e '.[bench]')"
        return None


TINY = App("tiny:app")


def _prun_exe() -> list[str]:
    local = Path(sys.executable).with_name("prun")
    if local.exists():
        return [str(local)]
    exe = shutil.which("prun")
    return [exe] if exe else [sys.executable, "-c", "from prun.cluster.cli import main; main()"]


class Server:
    """A server under test: started on `port` with `instances` workers serving apps/tiny."""

    name = "server"
    label = "server"
    ready_method = "log lines"
    reload_method = "SIGHUP"
    supports_reload = True
    tls: Certificate | None = None  # serve HTTPS with this certificate (set by make)
    ws: str | None = None  # the WebSocket implementation asked for, by the server's name for it (set by make)

    def __init__(self, instances: int, port: int | None = None, app: App = TINY, cpus: str | None = None) -> None:
        self.instances = instances
        self.port = port or free_port()
        self.app = app
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None
        self.out: Output | None = None
        self.started_at = 0.0

    # -- to define per server --
    def command(self) -> list[str]:
        raise NotImplementedError

    def tls_options(self, cert: Certificate) -> list[str]:
        """The server's options to serve TLS with `cert`."""
        raise Unavailable(f"{self.name}: TLS is not supported by the harness")

    def ws_options(self, ws: str) -> list[str]:
        """The server's options to serve WebSockets with the implementation `ws`."""
        raise Unavailable(f"{self.name}: WebSockets are not supported by the harness")

    def extra_options(self) -> list[str]:
        """The TLS and WebSocket options asked for (see tls, ws)."""
        return ((self.tls_options(self.tls) if self.tls else [])
                + (self.ws_options(self.ws) if self.ws else []))

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
        cmd = self.command()
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        self.proc = REGISTRY.popen(cmd, cwd=str(self.app.directory), env=self.env(), stdout=subprocess.PIPE,
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
                if get(self.port, timeout=1.0, ca=self.tls.ca if self.tls else None)[0] == 200:
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

    def __init__(self, instances: int, port: int | None = None, app: App = TINY, cpus: str | None = None,
                 balance: str | None = None, name: str | None = None) -> None:
        super().__init__(instances, port, app, cpus)
        from benchmarks.harness.machine import prun_default_balance

        self.balance = balance or prun_default_balance()
        self.name = name or f"prun-{self.balance}"
        self.label = f"prun --balance {self.balance}"

    def executable(self) -> list[str]:
        return _prun_exe()

    def command(self) -> list[str]:
        return self.executable() + ["run", self.app.target, "-i", str(self.instances), "-b", f"127.0.0.1:{self.port}",
                              "--interface", self.app.interface, "--balance", self.balance,
                              "--graceful-timeout", "10", "--chdir", str(self.app.directory), *self.extra_options()]

    def tls_options(self, cert: Certificate) -> list[str]:
        return ["--certfile", str(cert.cert), "--keyfile", str(cert.key)]

    def ws_options(self, ws: str) -> list[str]:
        return ["--ws", ws]

    def is_worker(self, proc: psutil.Process) -> bool:
        try:
            return " ".join(proc.cmdline()).startswith("prun worker")
        except psutil.Error:
            return False

    def ready_pattern(self) -> str:
        return r"prun: ready: \d+ workers?"

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


class PrunBase(Prun):
    """prun from another install, named by PRUN_BENCH_BASE (its `prun` executable): a change measured
    against the commit before it, round by round, on the same machine in the same run."""

    def __init__(self, instances: int, port: int | None = None, app: App = TINY, cpus: str | None = None) -> None:
        super().__init__(instances, port, app, cpus, None, "prun-base")
        exe = os.environ.get("PRUN_BENCH_BASE", "")
        if not exe or not os.access(exe, os.X_OK):
            raise Unavailable("prun-base: set PRUN_BENCH_BASE to the prun executable of the install to compare with")
        self.exe = exe
        self.label = f"prun {_install_commit(exe)} --balance {self.balance}"

    def executable(self) -> list[str]:
        return [self.exe]


def _install_commit(exe: str) -> str:
    """What a prun executable runs: PRUN_BENCH_BASE_LABEL if set, the git commit of its checkout if it has
    one, else the checkout's path."""
    if os.environ.get("PRUN_BENCH_BASE_LABEL"):
        return os.environ["PRUN_BENCH_BASE_LABEL"]
    root = Path(exe).resolve().parents[2]  # <checkout>/.venv/bin/prun
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return exe
    return f"at {done.stdout.strip()}" if done.returncode == 0 else f"from {root}"


class KillRestart(Prun):
    """The negative control: a 'reload' that SIGKILLs the whole prun tree and starts it again."""

    reload_method = "SIGKILL of the whole tree, then a fresh start"

    def __init__(self, instances: int, port: int | None = None, app: App = TINY, cpus: str | None = None) -> None:
        super().__init__(instances, port, app, cpus, "shared", "control-kill-restart")
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
    ready_method = "N 'Application startup complete' lines"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "uvicorn", self.app.target, "--http", "httptools", "--loop", "uvloop",
               "--host", "127.0.0.1", "--port", str(self.port), "--app-dir", str(self.app.directory),
               "--timeout-graceful-shutdown", "10", "--no-access-log"]
        if self.app.interface == "wsgi":
            cmd += ["--interface", "wsgi"]
        cmd += self.extra_options()
        # without --workers uvicorn runs the app in its own process (no supervisor): one worker pinned
        return cmd + (["--workers", str(self.instances)] if self.instances > 1 else [])

    @property
    def label(self) -> str:  # type: ignore[override]
        return "uvicorn --http httptools --loop uvloop" + (f" --ws {self.ws}" if self.ws else "")

    def tls_options(self, cert: Certificate) -> list[str]:
        return ["--ssl-certfile", str(cert.cert), "--ssl-keyfile", str(cert.key)]

    def ws_options(self, ws: str) -> list[str]:
        return ["--ws", ws]

    def is_worker(self, proc: psutil.Process) -> bool:
        try:
            return "spawn_main" in " ".join(proc.cmdline())
        except psutil.Error:
            return False

    def worker_procs(self) -> list[psutil.Process]:
        if self.instances == 1:
            return [self.master()]
        return super().worker_procs()

    def ready_pattern(self) -> str:
        return r"Application startup complete"


class Gunicorn(Server):
    name = "gunicorn"
    label = "gunicorn -k uvicorn.workers.UvicornWorker"
    ready_method = "N 'Application startup complete' lines"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", self.app.target, "-k", "uvicorn.workers.UvicornWorker",
                "-w", str(self.instances), "-b", f"127.0.0.1:{self.port}", "--chdir", str(self.app.directory),
                "--graceful-timeout", "10", "--no-control-socket", *self.extra_options()]

    def tls_options(self, cert: Certificate) -> list[str]:
        return ["--certfile", str(cert.cert), "--keyfile", str(cert.key)]

    def ready_pattern(self) -> str:
        return r"Application startup complete"


class GunicornThreads(Server):
    """gunicorn's threaded WSGI worker; 8 threads, as prun's WSGI pool (gunicorn's default is 1)."""

    name = "gunicorn-gthread"
    label = "gunicorn -k gthread --threads 8"
    ready_method = "N 'Booting worker' lines"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", self.app.target, "-k", "gthread", "--threads", "8",
                "-w", str(self.instances), "-b", f"127.0.0.1:{self.port}", "--chdir", str(self.app.directory),
                "--graceful-timeout", "10", "--no-control-socket"]

    def ready_pattern(self) -> str:
        return r"Booting worker with pid"


class Granian(Server):
    name = "granian"
    ready_method = "N 'Started worker-' lines"

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"granian --interface {self.app.interface}"

    def command(self) -> list[str]:
        local = Path(sys.executable).with_name("granian")
        exe = str(local) if local.exists() else shutil.which("granian") or "granian"
        return [exe, "--interface", self.app.interface, "--workers", str(self.instances), "--host", "127.0.0.1",
                "--port", str(self.port), "--working-dir", str(self.app.directory), "--workers-kill-timeout", "10",
                # granian sleeps --respawn-interval (3.5 s by default) between the workers it replaces
                # on SIGHUP; 0.5 s keeps a run of 20 reloads within minutes
                "--respawn-interval", "0.5", *self.extra_options(), self.app.target]

    def tls_options(self, cert: Certificate) -> list[str]:
        return ["--ssl-certificate", str(cert.cert), "--ssl-keyfile", str(cert.key)]

    def ws_options(self, ws: str) -> list[str]:
        return ["--ws"]  # granian has one implementation (its own, in Rust); on by default

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

    def __init__(self, instances: int, port: int | None = None, app: App = TINY, cpus: str | None = None) -> None:
        super().__init__(instances, port, app, cpus)
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


CLASSES: dict[str, type[Server]] = {"uvicorn": Uvicorn, "gunicorn": Gunicorn, "granian": Granian,
                                    "gunicorn-gthread": GunicornThreads, "granian-wsgi": Granian, "pm2": PM2}


def make(name: str, instances: int, port: int | None = None, app: App = TINY, cpus: str | None = None, *,
         tls: Certificate | None = None, ws: str | None = None) -> Server:
    """The server called `name` (see this module's docstring) on `app`, serving TLS with `tls` and
    WebSockets with the implementation `ws` (by the server's own name for it) when given."""
    server: Server
    if name in ("prun", "prun-shared", "prun-leastconn"):
        server = Prun(instances, port, app, cpus, None if name == "prun" else name.removeprefix("prun-"), name)
    elif name == "prun-base":
        server = PrunBase(instances, port, app, cpus)
    elif name == "control-kill-restart":
        server = KillRestart(instances, port, app, cpus)
    else:
        base, _, impl = name.partition("-")
        if base == "uvicorn" and impl in ("websockets", "wsproto", "websockets-sansio"):
            server = Uvicorn(instances, port, app, cpus)
            ws = impl
        else:
            if name == "granian-wsgi":
                app = App(app.target, "wsgi", app.directory, app.needs)
            server = CLASSES[name](instances, port, app, cpus)
        server.name = name
    server.tls = tls
    server.ws = ws
    if ws and isinstance(server, Prun):
        server.label += f" --ws {ws}"
    server.extra_options()  # a server without TLS or WebSocket support here says so now (Unavailable)
    return server


# the cluster scenarios' servers (python -m benchmarks.cluster --servers)
SERVERS = ["prun-shared", "prun-leastconn", "uvicorn", "gunicorn", "granian", "pm2"]
# the HTTP scenarios' servers, by the interface of the app (python -m benchmarks)
ASGI_SERVERS = ["prun", "uvicorn", "gunicorn", "granian"]
WSGI_SERVERS = ["prun", "gunicorn-gthread", "granian-wsgi"]
# the WebSocket echo scenario's servers (python -m benchmarks.ws_echo)
# (uvicorn's three: --ws websockets is what its --ws auto picks, on the websockets library's legacy asyncio
# layer; websockets-sansio is on the same sans-I/O protocol prun uses; wsproto)
WS_SERVERS = ["prun", "uvicorn-websockets", "uvicorn-websockets-sansio", "uvicorn-wsproto", "granian"]


