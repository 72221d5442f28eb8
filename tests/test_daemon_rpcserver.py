"""The daemon's RPC server as other processes meet it: who may talk to it, progress while it works, and what it
does with connections that idle or that would exhaust its file descriptors."""

from __future__ import annotations

import itertools
import json
import os
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from prun.cluster.client import Client
from tests.daemon_support import Home, start_stubborn
from tests.support import wait_until

NOBODY = 65534


def rpc_path(home: Home) -> str:
    return os.path.join(home.path, "rpc.sock")


def as_nobody(path: str, payload: bytes) -> dict[str, object]:
    """Connect to `path` from a child process running as uid/gid nobody, send `payload`, and read until the
    daemon closes the connection (10 s at most): {"lines": [...], "end": how the connection ended}."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_fd, json.dumps(talk(path, payload)).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, object] = json.loads(data or b'{"lines": [], "end": "the child failed"}')
    return result


def talk(path: str, payload: bytes) -> dict[str, object]:
    """What a peer sees: the lines it reads after sending `payload`, and how the connection ended."""
    lines: list[object] = []
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            try:
                sock.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed before we wrote: what it said is still there to read
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    end = "closed"
                    break
                data += chunk
                *whole, data = data.split(b"\n")
                lines += [json.loads(line) for line in whole]
    except ConnectionResetError:
        end = "closed"
    except TimeoutError:
        end = "still open after 10 s"
    except OSError as exc:
        end = f"{type(exc).__name__}: {exc}"
    return {"lines": lines, "end": end}


@contextmanager
def open_to_others(home: Home) -> Iterator[None]:
    """Let other users reach rpc.sock (as a careless chmod would); the modes are put back afterwards."""
    saved = [(path, os.stat(path).st_mode & 0o7777) for path in (home.root, home.path, rpc_path(home))]
    os.chmod(home.root, 0o711)
    os.chmod(home.path, 0o711)
    os.chmod(rpc_path(home), 0o666)
    try:
        yield
    finally:
        for path, mode in saved:
            os.chmod(path, mode)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_a_peer_of_another_uid_is_refused_and_the_daemon_keeps_serving(home: Home) -> None:
    home.prun("ping")
    with open_to_others(home):
        seen = as_nobody(rpc_path(home), b'{"id": 1, "command": "ping"}\n')
    assert seen["end"] == "closed", seen
    assert len(seen["lines"]) == 1, seen  # type: ignore[arg-type]
    reply = seen["lines"][0]  # type: ignore[index]
    assert reply["id"] is None and reply["error"]["code"] == "FORBIDDEN", reply
    assert "uid 65534" in reply["error"]["message"], reply
    assert home.prun("ping").stdout.startswith(f"pong: daemon {home.daemon_pid()} ")
    log = open(os.path.join(home.path, "daemon.log")).read()
    assert "refused an RPC connection from pid " in log and "(uid 65534)" in log


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed `sock` (without waiting; what it said first is read and dropped)."""
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_idle_connections_are_closed_and_cannot_wedge_a_daemon_out_of_descriptors(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "napper")
    pid = home.daemon_pid()
    assert pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    assert in_use < 40, in_use
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, 64))
    subscriber = Client(home.path).subscribe()  # the oldest connection, but not an idle one
    opened: list[socket.socket] = []
    try:
        for _ in range(80):  # more than the daemon can hold; the last one half a request
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(rpc_path(home))
            opened.append(sock)
        opened[-1].sendall(b'{"id": 1, "command": "pi')
        began = time.monotonic()
        assert [row["name"] for row in home.ls()] == ["napper"]
        assert time.monotonic() - began < 5
        wait_until(lambda: all(closed_by_peer(sock) for sock in opened), timeout=30,
                   what="the daemon to close every idle connection")
        log = open(os.path.join(home.path, "daemon.log")).read()
        assert "out of file descriptors" in log, log
        home.prun("stop", "napper")
        assert [event["event"] for event in itertools.islice(subscriber, 2)] == ["stopping", "exited"]
    finally:
        for sock in opened:
            sock.close()
        subscriber.close()  # type: ignore[attr-defined]


def send(home: Home, payload: bytes) -> tuple[socket.socket, Iterator[bytes]]:
    """A connection that has sent `payload`, and its lines as they come."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(20)
    sock.connect(rpc_path(home))
    try:
        sock.sendall(payload)
    except BrokenPipeError:
        pass  # turned away before we wrote: what it said is still there to read
    return sock, iter(sock.makefile("rb"))


def test_out_of_descriptors_with_every_connection_busy_a_newcomer_is_told_busy(home: Home) -> None:
    """Connections whose requests run are never closed to make room: past the limit, a newcomer gets one BUSY
    line, and every request that was running still gets its result."""
    start_stubborn(home, graceful=6)
    pid = home.daemon_pid()
    assert pid
    stop = b'{"id": 1, "command": "stop", "args": {"target": "stubborn"}}\n'
    running = [send(home, stop)]  # stopping takes 6 s; the next stops wait for it
    assert json.loads(next(running[0][1])) == {"id": 1, "progress": "working"}
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 3, hard))
        for _ in range(10):  # until the daemon has no descriptor left for a newcomer
            sock, lines = send(home, stop)
            reply = json.loads(next(lines))
            if reply != {"id": 1, "progress": "working"}:
                break
            running.append((sock, lines))
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert len(running) >= 2, running
    assert reply["id"] is None and reply["error"]["code"] == "BUSY", reply
    assert closed_by_peer(sock)
    sock.close()
    for sock, lines in running:
        with sock:
            reply = json.loads(next(lines))
            while reply == {"id": 1, "progress": "working"}:
                reply = json.loads(next(lines))
            assert reply["result"][0]["status"] == "stopped", reply
    assert [row["status"] for row in home.ls()] == ["stopped"]
