"""A bounded soak of a real prun master on loopback: mixed load, periodic reloads and worker kills.

    python -m benchmarks.soak [--minutes M] [--quick] [--balance leastconn,shared]
                              [--reload-every S] [--kill-every S]

For each balance policy: `prun run soak_app:app -i 2` (benchmarks/apps/soak_app.py) on 127.0.0.1, then load
from separate client processes (this module with --client KIND):

  keepalive  8 keep-alive connections, closed loop, mixed routes (/, /cpu, /stream, POST /echo)
  close      4 loops opening a connection per request
  pipeline   2 keep-alive connections, each writing 8 requests at once and reading the 8 replies
  slow       2 keep-alive connections reading a 512 KiB streamed body 8 KiB every 20 ms

While the load runs, the master gets a SIGHUP every --reload-every seconds and a random ready worker a SIGKILL
every --kill-every seconds, one operation at a time (a kill waits for its replacement to be ready, a reload for
its "reload complete" line). Every reply is checked (status, framing, the body's bytes); every failure is kept
with its start and end time, its kind (connect, reset, closed, short, timeout, status) and the worker it was
on when known. A failure on the killed worker's connection after the kill, or on a connection of unknown worker
in flight during the kill window (the SIGKILL until the worker was seen dead, plus 0.25 s), is a loss the kill
explains; every other one is not.

The master's and each worker's RSS and fd count are sampled idle after start-up, every few seconds under load
(from the end of the warm-up), and idle again after the load stops. Results: benchmarks/results/soak.json and
soak.md. Every process started is in a session of its own and killed at the end, on errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "benchmarks" / "apps"
RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("connect", "reset", "closed", "short", "timeout", "status")
KILL_SLACK = 0.25  # seconds after a killed worker is seen dead that a failure still counts as its loss
RSS_FLOOR = 1 << 20  # RSS moves by allocator arenas and pages: less than 1 MiB is never called growth
MIB = 1 << 20


# -- pure helpers (tests/test_bench_soak.py) --

def explained_by_kill(failure: dict, kills: list[dict]) -> bool:
    """Whether a kill explains a failed request.

    It does when the request was on the killed worker's connection (known from its earlier replies) and ended
    after the kill, or when its worker is unknown and it was in flight during the kill window (from the SIGKILL
    to KILL_SLACK after the worker was seen dead).
    """
    pid = failure.get("pid")
    for kill in kills:
        if pid == kill["pid"] and failure["end"] >= kill["at"]:
            return True
        if pid is None and failure["start"] <= kill["dead"] + KILL_SLACK and failure["end"] >= kill["at"]:
            return True
    return False


def split_failures(failures: list[dict], kills: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the failures a kill explains, the others)."""
    inside, outside = [], []
    for failure in failures:
        (inside if explained_by_kill(failure, kills) else outside).append(failure)
    return inside, outside


def growth(values: list[float], floor: float = 0.0) -> dict:
    """Growth of a sampled series beyond its noise.

    The first and the last fifth of the samples (at least 3 each) are the start and the end; the noise is the
    spread (max - min) within the start, when nothing should have changed yet, and never less than `floor`.
    Growth is the end's median minus the start's; it is beyond noise when larger than the noise.
    """
    if len(values) < 6:
        return {"samples": len(values), "start": None, "end": None, "growth": None, "noise": None, "beyond": None}
    n = max(3, len(values) // 5)
    head, tail = values[:n], values[-n:]
    noise = max(max(head) - min(head), floor)
    start, end = statistics.median(head), statistics.median(tail)
    return {"samples": len(values), "start": start, "end": end, "growth": end - start, "noise": noise,
            "beyond": end - start > noise}


# -- the load client: its own process --

class Failure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _body_expected(route: tuple[str, str, bytes]) -> bytes | None:
    method, path, body = route
    if method == "POST":
        return body
    if path == "/":
        return b"ok\n"
    return None


STREAM_KB = {"keepalive": 64, "slow": 512}
_STREAM_BODIES: dict[int, bytes] = {}


def stream_body(size: int) -> bytes:
    """The body /stream sends for `size` bytes: byte i is i % 251 (benchmarks/apps/soak_app.py)."""
    if size not in _STREAM_BODIES:
        _STREAM_BODIES[size] = (bytes(range(251)) * (size // 251 + 1))[:size]
    return _STREAM_BODIES[size]


class Client:
    """One kind of load; counts replies and keeps every failure with its times."""

    def __init__(self, kind: str, port: int, duration: float, timeout: float, seed: int) -> None:
        self.kind = kind
        self.port = port
        self.duration = duration
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.stop = asyncio.Event()
        self.ok = 0
        self.connections = 0
        self.failures: list[dict] = []
        self.retried: list[dict] = []
        self.by_route: dict[str, int] = {}

    # requests
    def route(self) -> tuple[str, str, bytes]:
        roll = self.rng.random()
        if self.kind == "slow":
            return ("GET", f"/stream?kb={STREAM_KB['slow']}", b"")
        if self.kind == "pipeline":
            return ("GET", "/", b"") if roll < 0.7 else ("GET", "/cpu?n=200", b"")
        if roll < 0.70:
            return ("GET", "/", b"")
        if roll < 0.85:
            return ("GET", "/cpu", b"")
        if roll < 0.93 and self.kind == "keepalive":
            return ("GET", f"/stream?kb={STREAM_KB['keepalive']}", b"")
        return ("POST", "/echo", self.rng.randbytes(self.rng.randint(1, 128 * 1024)))

    def encode(self, route: tuple[str, str, bytes], close: bool) -> bytes:
        method, path, body = route
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if method == "POST":
            head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        if close:
            head += "Connection: close\r\n"
        return head.encode() + b"\r\n" + body

    # replies
    async def reply(self, reader: asyncio.StreamReader, route: tuple[str, str, bytes]) -> tuple[str, bool]:
        """Read and check one reply: (the worker's pid, the server will close)."""
        try:
            status_line = await reader.readline()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Failure("closed", f"reset before the reply: {exc!r}") from None
        if not status_line:
            raise Failure("closed", "EOF before the reply")
        try:
            head = [status_line]
            while head[-1] not in (b"\r\n", b""):
                head.append(await reader.readline())
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Failure("reset", f"reading the head: {exc!r}") from None
        if head[-1] != b"\r\n":
            raise Failure("short", "EOF in the head")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit():
            raise Failure("status", f"status line {status_line[:80]!r}")
        status = int(parts[1])
        headers = {}
        for line in head[1:-1]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self.chunked(reader)
            else:
                body = await reader.readexactly(int(headers.get("content-length", "0")))
        except asyncio.IncompleteReadError as exc:
            raise Failure("short", f"EOF after {len(exc.partial)} bytes of the body") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Failure("reset", f"reading the body: {exc!r}") from None
        if status != 200:
            raise Failure("status", f"status {status}")
        self.check(route, body)
        return headers.get("x-worker-pid", "?"), headers.get("connection", "").lower() == "close"

    async def chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts = []
        slow = self.kind == "slow"
        while True:
            size_line = await reader.readline()
            if not size_line.endswith(b"\r\n"):
                raise asyncio.IncompleteReadError(b"".join(parts), None)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await reader.readexactly(2)
                return b"".join(parts)
            if slow:
                got = 0
                while got < size:
                    step = min(8192, size - got)
                    parts.append(await reader.readexactly(step))
                    got += step
                    await asyncio.sleep(0.02)
            else:
                parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def check(self, route: tuple[str, str, bytes], body: bytes) -> None:
        expected = _body_expected(route)
        path = route[1]
        if expected is not None and body != expected:
            raise Failure("short", f"{route[0]} {path}: {len(body)} bytes, not the {len(expected)} expected")
        if path.startswith("/stream"):
            size = int(path.rpartition("=")[2]) * 1024
            if body != stream_body(size):
                raise Failure("short", f"{path}: {len(body)} bytes of {size}")
        if path.startswith("/cpu") and len(body) != 64:
            raise Failure("short", f"{path}: {len(body)} bytes")

    # loops
    def fail(self, started: float, kind: str, detail: str, pid: str | None, route: tuple[str, str, bytes]) -> None:
        self.failures.append({"start": started, "end": time.monotonic(), "kind": kind, "detail": detail[:200],
                              "pid": int(pid) if pid and pid.isdigit() else None, "client": self.kind,
                              "route": f"{route[0]} {route[1]}"})

    def done(self, route: tuple[str, str, bytes]) -> None:
        self.ok += 1
        key = f"{route[0]} {route[1].partition('?')[0]}"
        self.by_route[key] = self.by_route.get(key, 0) + 1

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError as exc:
            raise Failure("connect", f"connect: {exc!r}") from None
        self.connections += 1
        return reader, writer

    async def connection(self, depth: int, close: bool) -> None:
        """Requests on one connection at a time (`depth` written at once) until it closes or the run ends.

        As HTTP clients do (RFC 9112 9.3.1-9.3.2): requests pipelined behind a `Connection: close` reply are
        sent again on a new connection, and so are GETs whose reused connection closed before a byte of their
        reply (the server closed it as idle while they were on the way); each is counted in `retried`.
        """
        reader = writer = None
        pid: str | None = None  # the worker that sent this connection's last reply
        pending: list[tuple[str, str, bytes]] = []
        again = False  # `pending` are being sent again: never twice
        while not self.stop.is_set():
            routes = pending or [self.route() for _ in range(depth)]
            pending = []
            started = time.monotonic()
            answered = 0
            reused = writer is not None
            closing = False
            try:
                async with asyncio.timeout(self.timeout):
                    if writer is None:
                        reader, writer = await self.open()
                        pid = None
                    writer.write(b"".join(self.encode(r, close) for r in routes))
                    for route in routes:
                        pid, closing = await self.reply(reader, route)
                        answered += 1
                        self.done(route)
                        if closing:
                            break
                again = False
                if close or closing:
                    writer.close()
                    writer = None
                    pending = routes[answered:]
                    if pending:
                        self.retry(started, "pipelined behind Connection: close", pid, pending)
            except (Failure, TimeoutError, OSError) as exc:
                if isinstance(exc, Failure):
                    kind, detail = exc.kind, str(exc)
                elif isinstance(exc, TimeoutError):
                    kind, detail = "timeout", f"no reply within {self.timeout:g}s"
                else:
                    kind, detail = "reset", repr(exc)
                rest = routes[answered:]
                if (kind == "closed" and (reused or answered) and not again
                        and all(r[0] == "GET" for r in rest)):
                    pending, again = rest, True
                    self.retry(started, detail, pid, pending)
                else:
                    again = False
                    for route in rest:
                        self.fail(started, kind, detail, pid, route)
                if writer is not None:
                    writer.close()
                    writer = None
                if kind == "connect":
                    await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    def retry(self, started: float, why: str, pid: str | None, routes: list[tuple[str, str, bytes]]) -> None:
        for route in routes:
            self.retried.append({"start": started, "end": time.monotonic(), "why": why[:100], "client": self.kind,
                                 "pid": int(pid) if pid and pid.isdigit() else None,
                                 "route": f"{route[0]} {route[1]}"})

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        loop.call_later(self.duration, self.stop.set)
        shape = {"keepalive": (8, 1, False), "close": (4, 1, True), "pipeline": (2, 8, False),
                 "slow": (2, 1, False)}[self.kind]
        count, depth, close = shape
        tasks = [asyncio.create_task(self.connection(depth, close)) for _ in range(count)]
        await self.stop.wait()
        _done, pending = await asyncio.wait(tasks, timeout=self.timeout + 2)
        for task in pending:
            task.cancel()
        return {"client": self.kind, "ok": self.ok, "connections": self.connections, "by_route": self.by_route,
                "failures": self.failures, "retried": self.retried}


def client_main(args: argparse.Namespace) -> None:
    client = Client(args.client, args.port, args.duration, args.timeout, args.seed)
    result = asyncio.run(client.run())
    tmp = args.out + ".tmp"
    Path(tmp).write_text(json.dumps(result))
    os.replace(tmp, args.out)


# -- the driver --

class Procs:
    """Every process the soak starts, each in a session of its own; `kill_all` kills their whole trees."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        import psutil

        for proc in reversed(self.procs):
            try:
                tree = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                tree = []
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            for child in tree:
                try:
                    child.kill()
                except psutil.Error:
                    pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                print(f"soak: process {proc.pid} did not exit", file=sys.stderr)
        self.procs.clear()


class Master:
    """A `prun run` of the soak app, its output lines (with the time each was read) and its workers."""

    def __init__(self, procs: Procs, balance: str, port: int, instances: int) -> None:
        cmd = [sys.executable, "-m", "prun.cluster", "run", "soak_app:app", "-i", str(instances),
               "-b", f"127.0.0.1:{port}", "--balance", balance, "--chdir", str(APPS), "--graceful-timeout", "10"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PORT", None)
        env.pop("WEB_CONCURRENCY", None)
        self.proc = procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.instances = instances
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def wait(self, pattern: str, timeout: float, start: int = 0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            index = start
            while True:
                for _stamp, line in self.lines[index:]:
                    index += 1
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = " | ".join(line for _t, line in self.lines[-6:])
                    raise RuntimeError(f"no line matching {pattern!r} within {timeout:g}s: {tail}")
                self.cond.wait(min(left, 0.2))

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self.cond:
            return sum(1 for _t, line in self.lines if regex.search(line))

    def workers(self) -> list:
        import psutil

        found = []
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE and " ".join(child.cmdline()).startswith("prun worker"):
                    found.append(child)
            except (psutil.Error, IndexError):
                pass
        return found


def snapshot(master: Master, began: float) -> dict:
    """The master's and each worker's RSS (bytes) and open fds, now."""
    import psutil

    def one(proc: psutil.Process) -> dict | None:
        try:
            with proc.oneshot():
                return {"pid": proc.pid, "rss": proc.memory_info().rss, "fds": proc.num_fds(),
                        "title": " ".join(proc.cmdline())}
        except psutil.Error:
            return None

    workers = [w for w in (one(p) for p in master.workers()) if w is not None]
    return {"t": round(time.monotonic() - began, 2), "master": one(psutil.Process(master.proc.pid)),
            "workers": sorted(workers, key=lambda w: w["title"])}


def start_clients(procs: Procs, port: int, duration: float, tmp: Path, seed: int) -> list[tuple[subprocess.Popen, Path]]:
    clients = []
    for i, kind in enumerate(("keepalive", "close", "pipeline", "slow")):
        out = tmp / f"client-{kind}.json"
        cmd = [sys.executable, "-m", "benchmarks.soak", "--client", kind, "--port", str(port),
               "--duration", str(duration), "--seed", str(seed + i), "--out", str(out)]
        clients.append((procs.start(cmd, cwd=str(ROOT)), out))
    return clients


def stop_clients(clients: list[tuple[subprocess.Popen, Path]]) -> list[dict]:
    for proc, _out in clients:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    results = []
    for proc, out in clients:
        proc.wait(30)
        results.append(json.loads(out.read_text()))
    return results


def kill_worker(master: Master, rng: random.Random, began: float) -> dict:
    """SIGKILL a random worker, wait until it is dead and its replacement is ready: the kill's record."""
    import psutil

    workers = master.workers()
    victim = rng.choice(workers)
    mark = master.mark()
    at = time.monotonic()
    victim.kill()
    try:
        victim.wait(10)
    except psutil.TimeoutExpired:
        raise RuntimeError(f"worker {victim.pid} did not die within 10 s of SIGKILL") from None
    dead = time.monotonic()
    master.wait(r"worker \d+ \(pid \d+, gen \d+\) ready", 60, start=mark)
    return {"pid": victim.pid, "at": at, "dead": dead, "ready": time.monotonic(), "t": round(at - began, 2)}


def reload(master: Master) -> tuple[bool, float, str]:
    mark = master.mark()
    at = time.monotonic()
    os.kill(master.proc.pid, signal.SIGHUP)
    match = master.wait(r"reload (complete|failed).*", 60, start=mark)
    return match.group(1) == "complete", time.monotonic() - at, match.group(0)


def prime(port: int, count: int) -> None:
    """A few requests on new connections, so every worker has served before its idle fds are counted.

    A worker's first connection makes libuv open its spare fd for EMFILE (/dev/null, kept for good): without
    this, that one fd would look like growth.
    """
    import urllib.request

    for _ in range(count):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:  # noqa: S310 - loopback
            reply.read()


def settle(master: Master, began: float, instances: int, limit: float = 15.0) -> dict:
    """An idle snapshot once the fd counts stop moving (two equal snapshots 1 s apart), at most `limit` s."""
    deadline = time.monotonic() + limit
    last = snapshot(master, began)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = snapshot(master, began)
        counts = [now["master"]["fds"]] + [w["fds"] for w in now["workers"]]
        if counts == [last["master"]["fds"]] + [w["fds"] for w in last["workers"]] and len(now["workers"]) == instances:
            return now
        last = now
    return last


def run_policy(balance: str, args: argparse.Namespace, tmp: Path) -> dict:
    import socket

    procs = Procs()
    rng = random.Random(args.seed)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        began = time.monotonic()
        master = Master(procs, balance, port, args.instances)
        master.wait(r"ready: \d+ workers?", 60)
        prime(port, 20 * args.instances)
        idle_start = settle(master, began, args.instances)
        seconds = args.minutes * 60
        clients = start_clients(procs, port, args.warmup + seconds + 30, tmp / balance, args.seed)
        time.sleep(args.warmup)
        samples = [snapshot(master, began)]
        load_began = time.monotonic()
        end = load_began + seconds
        next_reload = load_began + args.reload_every
        next_kill = load_began + args.kill_every / 2
        next_sample = load_began + args.sample_every
        kills: list[dict] = []
        reloads: list[dict] = []
        while time.monotonic() < end and len(kills) + len(reloads) < args.max_ops:
            now = time.monotonic()
            if now >= next_sample:
                samples.append(snapshot(master, began))
                next_sample += args.sample_every
            elif now >= next_reload:
                ok, took, line = reload(master)
                reloads.append({"t": round(now - began, 2), "at": now, "done": now + took, "ok": ok, "seconds": round(took, 3), "line": line})
                next_reload = time.monotonic() + args.reload_every
            elif now >= next_kill:
                kills.append(kill_worker(master, rng, began))
                next_kill = time.monotonic() + args.kill_every
            else:
                time.sleep(0.05)
            if any(proc.poll() is not None for proc, _ in clients):
                raise RuntimeError("a load client exited early")
        samples.append(snapshot(master, began))
        load_ended = time.monotonic()
        results = stop_clients(clients)
        idle_end = settle(master, began, args.instances)
        restarts = master.count(r"restarting it")
        master_alive = master.proc.poll() is None
    finally:
        procs.kill_all()
    return analyse(balance, began, args, results, kills, reloads, samples, idle_start, idle_end, restarts, master_alive,
                   load_ended - load_began)


def analyse(balance: str, began: float, args: argparse.Namespace, clients: list[dict], kills: list[dict], reloads: list[dict],
            samples: list[dict], idle_start: dict, idle_end: dict, restarts: int, master_alive: bool,
            seconds: float) -> dict:
    failures = [f for c in clients for f in c["failures"]]
    inside, outside = split_failures(failures, kills)
    retried = [r for c in clients for r in c["retried"]]
    retried_in_kills, retried_otherwise = split_failures(retried, kills)
    retried_in_reloads = [r for r in retried_otherwise
                          if any(r["start"] <= x["done"] + 1.0 and r["end"] >= x["at"] for x in reloads)]

    def kinds(group: list[dict]) -> dict:
        return {kind: sum(1 for f in group if f["kind"] == kind) for kind in KINDS}

    master_rss = growth([s["master"]["rss"] for s in samples], RSS_FLOOR)
    master_fds = growth([float(s["master"]["fds"]) for s in samples])
    lifetimes: dict[int, list[dict]] = {}
    for s in samples:
        for w in s["workers"]:
            lifetimes.setdefault(w["pid"], []).append(w)
    worker_rss = [life[-1]["rss"] - life[0]["rss"] for life in lifetimes.values() if len(life) >= 3]
    worker_fds_idle = (max(w["fds"] for w in idle_end["workers"]) - max(w["fds"] for w in idle_start["workers"])
                       if idle_end["workers"] and idle_start["workers"] else None)
    return {
        "balance": balance,
        "began": began,
        "instances": args.instances,
        "seconds": round(seconds, 1),
        "clients": [{k: c[k] for k in ("client", "ok", "connections", "by_route")} | {"failed": len(c["failures"])}
                    for c in clients],
        "ok": sum(c["ok"] for c in clients),
        "failed": len(failures),
        "failed_in_kill_windows": kinds(inside),
        "failed_otherwise": kinds(outside),
        "failures_otherwise": outside[:50],
        "retried": {"in_kill_windows": len(retried_in_kills), "otherwise": len(retried_otherwise),
                    "otherwise_during_reloads": len(retried_in_reloads),
                    "why": {why: sum(1 for r in retried if r["why"] == why) for why in {r["why"] for r in retried}}},
        "retried_otherwise_samples": retried_otherwise[:20],
        "failure_samples_in_kill_windows": inside[:10],
        "kills": kills,
        "reloads": reloads,
        "reloads_ok": sum(r["ok"] for r in reloads),
        "restarts_logged": restarts,
        "master_alive_at_end": master_alive,
        "idle_start": idle_start,
        "idle_end": idle_end,
        "samples": samples,
        "verdict": {
            "failures_outside_kill_windows": len(outside),
            "master_fds_idle_growth": idle_end["master"]["fds"] - idle_start["master"]["fds"],
            "worker_fds_idle_growth": worker_fds_idle,
            "master_fds_under_load": master_fds,
            "master_rss_under_load": master_rss,
            "master_rss_idle_growth": idle_end["master"]["rss"] - idle_start["master"]["rss"],
            "worker_rss_lifetime_growth": {"workers": len(worker_rss),
                                           "median": statistics.median(worker_rss) if worker_rss else None,
                                           "max": max(worker_rss) if worker_rss else None},
            "fresh_worker_rss": {"start": [w["rss"] for w in samples[0]["workers"]],
                                 "end": [w["rss"] for w in samples[-1]["workers"]]},
        },
    }


def machine() -> dict:
    def commit() -> str | None:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True)
        return done.stdout.strip() or None

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": commit(),
            "cpus": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:+.1f}"


def report(data: dict) -> str:
    m = data["machine"]
    lines = [
        "# Soak: mixed load, reloads and worker kills",
        "",
        f"`python -m benchmarks.soak --minutes {data['minutes']:g}` at commit {m['commit']}, {m['date']}, on "
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}; load average "
        f"{' / '.join(map(str, m['loadavg']))} at the start and "
        f"{' / '.join(map(str, data['loadavg_end']))} at the end (1 / 5 / 15 min; the machine is shared).",
        "",
        f"`prun -i {data['instances']}` on 127.0.0.1; clients in 4 processes: 8 keep-alive connections (mixed "
        "`/`, `/cpu`, a 64 KiB streamed body, uploads up to 128 KiB echoed), 4 loops of a connection per "
        "request, 2 connections pipelining 8 requests at a time, 2 slow readers of a 512 KiB streamed body. "
        f"A SIGHUP every {data['reload_every']:g} s and a SIGKILL of a random worker every {data['kill_every']:g} s, "
        "one at a time. Every reply's status, framing and body are checked.",
        "",
        "| | " + " | ".join(r["balance"] for r in data["runs"]) + " |",
        "|---|" + "---:|" * len(data["runs"]),
    ]

    def row(label: str, fn) -> None:  # noqa: ANN001
        lines.append(f"| {label} | " + " | ".join(str(fn(r)) for r in data["runs"]) + " |")

    row("seconds under load", lambda r: r["seconds"])
    row("requests ok", lambda r: f"{r['ok']:,}")
    row("reloads (complete / sent)", lambda r: f"{r['reloads_ok']} / {len(r['reloads'])}")
    row("workers killed (restarts logged)", lambda r: f"{len(r['kills'])} ({r['restarts_logged']})")
    row("failed in kill windows", lambda r: _kinds(r["failed_in_kill_windows"]))
    row("**failed otherwise**", lambda r: f"**{_kinds(r['failed_otherwise'])}**")
    row("GETs sent again, in kill windows / otherwise (of which during a reload)",
        lambda r: f"{r['retried']['in_kill_windows']} / {r['retried']['otherwise']} "
                  f"({r['retried']['otherwise_during_reloads']})")
    row("master fds idle, start -> end", lambda r: f"{r['idle_start']['master']['fds']} -> {r['idle_end']['master']['fds']}")
    row("worker fds idle, start -> end", lambda r: f"{_worker(r['idle_start'], 'fds')} -> {_worker(r['idle_end'], 'fds')}")
    row("master fds under load, start -> end (noise)", lambda r: _series(r["verdict"]["master_fds_under_load"], 1))
    row("master RSS MiB idle, start -> end",
        lambda r: f"{r['idle_start']['master']['rss'] / MIB:.1f} -> {r['idle_end']['master']['rss'] / MIB:.1f}")
    row("master RSS MiB under load, start -> end (noise)", lambda r: _series(r["verdict"]["master_rss_under_load"], MIB))
    row("worker RSS MiB after warm-up -> at the end (fresh workers)",
        lambda r: f"{_mibs(r['verdict']['fresh_worker_rss']['start'])} -> {_mibs(r['verdict']['fresh_worker_rss']['end'])}")
    row("worker RSS growth over a worker's life, median / max MiB",
        lambda r: f"{_mib(r['verdict']['worker_rss_lifetime_growth']['median'])} / "
                  f"{_mib(r['verdict']['worker_rss_lifetime_growth']['max'])}")
    lines += ["", "## Verdict", ""]
    for r in data["runs"]:
        v = r["verdict"]
        rss = v["master_rss_under_load"]
        fds = v["master_fds_under_load"]
        lines.append(f"- **{r['balance']}**: failures outside kill windows: {v['failures_outside_kill_windows']} "
                     f"(expect 0); fd growth: master {v['master_fds_idle_growth']:+d} idle, workers "
                     f"{v['worker_fds_idle_growth']:+d} idle, master under load "
                     f"{'beyond noise' if fds['beyond'] else 'within noise'}; RSS growth: master "
                     f"{_mib(rss['growth'])} MiB under load against {rss['noise'] / MIB:.1f} MiB of noise "
                     f"({'beyond noise' if rss['beyond'] else 'within noise'}), {_mib(v['master_rss_idle_growth'])} "
                     f"MiB idle to idle.")
    lines += [
        "",
        "A GET whose reused keep-alive connection closed before a byte of its reply, or that was pipelined "
        "behind a `Connection: close` reply, is sent once more on a new connection, as HTTP clients do "
        "(RFC 9112 9.3.1-9.3.2): it is counted as sent again, and as failed only if that fails too. "
        "POSTs are never sent again.",
        "",
        "How it is judged: a failure is explained by a kill when it was on a connection the killed worker had "
        "answered before (its `x-worker-pid`) and ended after the SIGKILL, or, on a connection whose worker is not "
        f"known yet, when it was in flight between the SIGKILL and {KILL_SLACK:g} s after the worker was seen dead; "
        "every other failure counts against prun. Idle fd counts are exact "
        "(taken once two snapshots 1 s apart agree, before the load and after it): any difference is growth. "
        "For a series sampled under load (every "
        f"{data['sample_every']:g} s), the start is the median of its first fifth, the end the median of its last "
        "fifth, and the noise the spread (max - min) within the first fifth, when nothing should have changed yet, "
        f"never less than {RSS_FLOOR // MIB} MiB for RSS; growth beyond that noise is called growth. Workers are "
        "replaced by every reload and kill, so a worker's own growth is its last sample minus its first.",
    ]
    for r in data["runs"]:
        if r["failures_otherwise"]:
            lines += ["", f"Failures outside kill windows ({r['balance']}), first ones:", ""]
            lines += [f"- t={f['start'] - r['began']:.2f}..{f['end'] - r['began']:.2f} s {f['client']} {f['route']}: {f['kind']}: {f['detail']}"
                      for f in r["failures_otherwise"][:10]]
    return "\n".join(lines) + "\n"


def _kinds(counts: dict) -> str:
    total = sum(counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    return f"{total}" + (f" ({detail})" if detail else "")


def _worker(snap: dict, key: str) -> str:
    return ", ".join(str(w[key]) for w in snap["workers"]) or "-"


def _mibs(values: list[int]) -> str:
    return ", ".join(f"{v / MIB:.1f}" for v in values) or "-"


def _series(g: dict, unit: float) -> str:
    if g["start"] is None:
        return "-"
    return f"{g['start'] / unit:.1f} -> {g['end'] / unit:.1f} ({g['noise'] / unit:.1f})"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes under load per policy (default 3)")
    parser.add_argument("--quick", action="store_true", help="a short check: 0.5 minute per policy")
    parser.add_argument("--balance", default="leastconn,shared")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--reload-every", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=7.0)
    parser.add_argument("--sample-every", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--max-ops", type=int, default=2000, help="at most this many reloads and kills per policy")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--results", default=str(RESULTS))
    # a load client (started by the driver)
    parser.add_argument("--client", choices=("keepalive", "close", "pipeline", "slow"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args)
        return 0
    if args.quick:
        args.minutes, args.warmup = 0.5, 4.0
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # even when started with SIGINT ignored (`cmd &` in a script)
    try:
        return soak(args)
    except KeyboardInterrupt as exc:
        print(f"soak: interrupted ({exc}); every process it started is stopped", file=sys.stderr)
        return 130


def soak(args: argparse.Namespace) -> int:
    """Every policy in turn, then the result files; 1 when a verdict fails."""
    tmp = Path(tempfile.mkdtemp(prefix="prun-soak-"))
    data = {"machine": machine(), "minutes": args.minutes, "instances": args.instances,
            "reload_every": args.reload_every, "kill_every": args.kill_every, "sample_every": args.sample_every,
            "warmup": args.warmup, "runs": []}
    for balance in args.balance.split(","):
        (tmp / balance).mkdir()
        print(f"[{time.strftime('%H:%M:%S')}] soak: --balance {balance}, {args.minutes:g} min", file=sys.stderr)
        run = run_policy(balance, args, tmp)
        data["runs"].append(run)
        v = run["verdict"]
        print(f"  {run['ok']:,} ok, {run['failed']} failed ({v['failures_outside_kill_windows']} outside kill "
              f"windows), {run['reloads_ok']}/{len(run['reloads'])} reloads, {len(run['kills'])} kills", file=sys.stderr)
    data["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    name = "soak-quick" if args.quick else "soak"
    (results / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (results / f"{name}.md").write_text(report(data))
    print(f"wrote {results / name}.md and .json", file=sys.stderr)
    bad = any(r["verdict"]["failures_outside_kill_windows"] or r["verdict"]["master_fds_idle_growth"]
              or r["verdict"]["master_rss_under_load"]["beyond"] for r in data["runs"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
