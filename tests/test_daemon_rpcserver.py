"""The daemon's RPC server as other processes meet it: who may talk to it, progress while it works, and what it
does with connections that idle or that would exhaust its file descriptors."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.daemon_support import Home

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
