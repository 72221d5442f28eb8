"""The load client of the scenarios that count failures (reload loss and soak, fairness, reload time):
raw-socket HTTP/1.1 GETs that classify every failure.

    python -m benchmarks.harness.load --port P --mode keepalive|close [--concurrency C]
                                      [--rate R] [--path /] [--duration S] --out result.json

Modes:
  keepalive  C connections, each sending its next request as soon as the last reply is read (closed
             loop). A connection the server ends with `Connection: close` is replaced, not counted.
  close      C loops, each opening a new connection per request (`Connection: close`).
  --rate R   open loop instead: R requests a second on new connections, whatever the replies do;
             latency is measured from the moment each request was due (no coordinated omission).

The run ends by itself after --duration seconds, or earlier on SIGINT/SIGTERM; the result (JSON) is
written to --out. Failures are counted by kind:

  connect   the connection was refused or did not open within the connect timeout
  reset     ECONNRESET / EPIPE while sending or reading
  closed    the server closed the connection before sending a byte of the reply
  truncated the server closed the connection in the middle of a reply
  timeout   no complete reply within the request timeout
  non2xx    a reply whose status is not 2xx
  bad       a reply that is not HTTP/1.1 as expected
  client    a failure on the client's side (e.g. no local port left); not the server's fault
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import signal
import socket
import sys
import time
from collections import Counter

KINDS = ("connect", "reset", "closed", "truncated", "timeout", "non2xx", "bad", "client")
SERVER_KINDS = KINDS[:-1]


class Failure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Stats:
    def __init__(self) -> None:
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.samples: dict[str, list[str]] = {}
        self.pids: Counter[str] = Counter()
        self.done_at: list[float] = []  # monotonic time each successful request ended
        self.latency: list[float] = []  # its latency in seconds
        self.fail_at: list[tuple[float, str]] = []
        self.connections = 0

    def success(self, pid: str, started: float, ended: float) -> None:
        self.ok += 1
        self.pids[pid] += 1
        self.done_at.append(ended)
        self.latency.append(ended - started)

    def failure(self, exc: Failure) -> None:
        self.failures[exc.kind] += 1
        self.fail_at.append((time.monotonic(), exc.kind))
        samples = self.samples.setdefault(exc.kind, [])
        if len(samples) < 5:
            samples.append(str(exc))


def request_bytes(path: str, port: int, close: bool) -> bytes:
    connection = "close" if close else "keep-alive"
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: prun-bench\r\n"
            f"Connection: {connection}\r\n\r\n").encode()


async def connect(loop: asyncio.AbstractEventLoop, port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, ("127.0.0.1", port))
    except TimeoutError:
        sock.close()
        raise Failure("connect", "connect timed out") from None
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EMFILE, errno.ENFILE, errno.ENOBUFS):
            raise Failure("client", f"connect: {exc!r}") from None
        raise Failure("connect", f"connect: {exc!r}") from None
    return sock


async def exchange(loop: asyncio.AbstractEventLoop, sock: socket.socket, request: bytes) -> tuple[int, str, bool]:
    """Send one request, read one reply: (status, worker pid, server will close)."""
    try:
        await loop.sock_sendall(sock, request)
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise Failure("reset", f"send: {exc!r}") from None
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        try:
            chunk = await loop.sock_recv(sock, 65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Failure("reset", f"read: {exc!r}") from None
        if not chunk:
            raise Failure("truncated" if buf else "closed", f"EOF after {len(buf)} bytes of the reply")
        buf += chunk
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Failure("bad", f"status line {head[0]!r}")
    status = int(parts[1])
    length = None
    pid = "?"
    closing = parts[0] == "HTTP/1.0"
    chunked = False
    for line in head[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "x-worker-pid":
            pid = value
        elif name == "connection":
            closing = value.lower() == "close"
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
    body = buf[end + 4:]
    if chunked:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = await _recv(loop, sock)
            body += chunk
    elif length is not None:
        while len(body) < length:
            body += await _recv(loop, sock)
    else:
        raise Failure("bad", "reply without content-length or chunked framing")
    return status, pid, closing


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    try:
        chunk = await loop.sock_recv(sock, 65536)
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise Failure("reset", f"read body: {exc!r}") from None
    if not chunk:
        raise Failure("truncated", "EOF in the body")
    return chunk


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.keep_request = request_bytes(args.path, args.port, close=False)
        self.close_request = request_bytes(args.path, args.port, close=True)
        self.inflight = 0
        self.skipped = 0  # open loop: requests not sent because --max-inflight were pending

    async def one_close(self, due: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        started = due if due is not None else time.monotonic()
        sock = None
        try:
            async with asyncio.timeout(self.args.timeout):
                sock = await connect(loop, self.args.port, self.args.connect_timeout)
                self.stats.connections += 1
                status, pid, _closing = await exchange(loop, sock, self.close_request)
                # let the server close first, as it said it would: its side keeps the TIME_WAIT
                try:
                    async with asyncio.timeout(1.0):
                        while await loop.sock_recv(sock, 4096):
                            pass
                except (TimeoutError, OSError):
                    pass
        except TimeoutError:
            self.stats.failure(Failure("timeout", f"no reply within {self.args.timeout}s"))
            return
        except Failure as exc:
            self.stats.failure(exc)
            return
        except OSError as exc:
            self.stats.failure(Failure("reset", repr(exc)))
            return
        finally:
            if sock is not None:
                sock.close()
        self.record(status, pid, started)

    def record(self, status: int, pid: str, started: float) -> None:
        if 200 <= status < 300:
            self.stats.success(pid, started, time.monotonic())
        else:
            self.stats.failure(Failure("non2xx", f"status {status}"))

    async def keepalive_client(self) -> None:
        loop = asyncio.get_running_loop()
        sock = None
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.args.timeout):
                    if sock is None:
                        sock = await connect(loop, self.args.port, self.args.connect_timeout)
                        self.stats.connections += 1
                    status, pid, closing = await exchange(loop, sock, self.keep_request)
            except TimeoutError:
                self.stats.failure(Failure("timeout", f"no reply within {self.args.timeout}s"))
                closing = True
            except Failure as exc:
                self.stats.failure(exc)
                closing = True
                if exc.kind == "client":
                    await asyncio.sleep(0.01)
            except OSError as exc:
                self.stats.failure(Failure("reset", repr(exc)))
                closing = True
            else:
                self.record(status, pid, started)
            if closing and sock is not None:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    async def close_client(self) -> None:
        while not self.stop.is_set():
            await self.one_close()

    async def open_loop(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.args.rate
        start = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = start + n * interval
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            n += 1
            if len(tasks) >= self.args.max_inflight:
                self.skipped += 1
                continue
            task = asyncio.create_task(self.one_close(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=self.args.timeout + 1)

    async def run(self) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        loop.call_later(self.args.duration, self.stop.set)
        began = time.monotonic()
        if self.args.rate:
            await self.open_loop()
        else:
            client = self.keepalive_client if self.args.mode == "keepalive" else self.close_client
            tasks = [asyncio.create_task(client()) for _ in range(self.args.concurrency)]
            await self.stop.wait()
            _done, pending = await asyncio.wait(tasks, timeout=self.args.timeout + 2)
            for task in pending:
                task.cancel()
        ended = time.monotonic()
        s = self.stats
        return {
            "mode": "open-loop" if self.args.rate else self.args.mode,
            "concurrency": self.args.concurrency,
            "rate": self.args.rate,
            "path": self.args.path,
            "began": began,
            "ended": ended,
            "ok": s.ok,
            "failures": {kind: s.failures.get(kind, 0) for kind in KINDS},
            "failed": sum(s.failures.get(kind, 0) for kind in SERVER_KINDS),
            "samples": s.samples,
            "pids": dict(s.pids),
            "connections": s.connections,
            "skipped": self.skipped,
            "done_at": s.done_at,
            "latency": s.latency,
            "fail_at": s.fail_at,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.harness.load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("keepalive", "close"), default="keepalive")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--max-inflight", type=int, default=256)
    parser.add_argument("--path", default="/")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--connect-timeout", type=float, default=3.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(Load(args).run())
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, args.out)
    print(f"load: {result['ok']} ok, {result['failed']} failed", file=sys.stderr)


if __name__ == "__main__":
    main()
