"""The client's end of rpc.sock: a connection to our own daemon, checked before anything is sent, every wait
bounded (PROTOCOL.md, "Connections and timeouts").

    with connect(home, idle_timeout=5.0) as conn:    # PrunError if the home, the socket or its listener is not ours
        rows = conn.request(1, "list", {}, cap=30.0)

A daemon at work on a request sends a progress line for it every second; one silent for `idle_timeout`
(stopped, wedged) or still working when the command's cap runs out ends the wait with ClientError("TIMEOUT"),
whose sentence names the daemon's pid. This module is on the path of every command: standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from prun.cluster.daemon.home import Home
from prun.cluster.errors import PrunError

IDLE_TIMEOUT = 5.0  # seconds the daemon may stay silent; at work, it sends a line every second
BACKLOG_POLL = 0.05  # seconds between connect() attempts while the daemon's backlog is full
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
QUERIES = frozenset({"ping", "list", "describe", "env", "subscribe"})  # commands that change nothing


class ClientError(PrunError):
    """The daemon refused a command, or did not answer: `code_name` says why (rpc.CODES, or TIMEOUT when it
    did not answer in time, NOT_RUNNING when none runs), the message says it to a person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code_name = code


def connect(home: Home, idle_timeout: float = IDLE_TIMEOUT) -> Connection:
    """A connection to the daemon of `home`, nothing sent yet.

    PrunError when the home or rpc.sock is not ours and closed to others, or the process listening on it runs
    as another user; ClientError("TIMEOUT") when its backlog stays full; OSError when nobody listens."""
    home.check()
    home.check_socket()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        dial(sock, home.rpc, idle_timeout)
        pid = check_peer(sock, home.rpc)
    except TimeoutError:
        sock.close()
        raise no_answer(home.daemon_pid(), idle_timeout) from None
    except BaseException:
        sock.close()
        raise
    return Connection(sock, pid, idle_timeout)


def dial(sock: socket.socket, path: str, timeout: float) -> None:
    """connect(), waiting at most `timeout` for room in a backlog the daemon has stopped taking from."""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:  # a Unix socket's backlog is full: no waiting in the kernel, so poll
            if time.monotonic() >= deadline:
                raise TimeoutError(path) from None
            time.sleep(BACKLOG_POLL)


def check_peer(sock: socket.socket, path: str) -> int:
    """The pid listening on `path`, refused unless it runs as our uid: the socket file's checks cannot see a
    file swapped between them and connect(); the kernel's record of who listens can."""
    pid, uid, _gid = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    if uid != os.getuid():
        raise PrunError(f"refusing {path}: the process listening on it (pid {pid}) runs as uid {uid}, not as you")
    return int(pid)


def no_answer(pid: int | None, idle_timeout: float, command: str = "") -> ClientError:
    """The failure of a daemon that stayed silent; a command it was sent may still be carried out later."""
    later = f" (the {command} it was sent may still be carried out)" if command and command not in QUERIES else ""
    return ClientError("TIMEOUT", f"the prun daemon (pid {pid}) did not answer within {idle_timeout:g} s: "
                                  f"is it stopped or overloaded?{later}")


class Connection:
    """One connection to the daemon: requests answered in order, each wait for a line bounded."""

    def __init__(self, sock: socket.socket, pid: int, idle_timeout: float) -> None:
        self.sock = sock
        self.pid = pid  # the daemon's, from the kernel (SO_PEERCRED)
        self.idle_timeout = idle_timeout
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, request_id: int, command: str, args: dict[str, Any], cap: float) -> Any:
        """Send one request and wait for its result (its progress lines only show the daemon is at work): the
        result; ClientError with the daemon's code, or TIMEOUT when silent or still working at `cap` seconds."""
        deadline = time.monotonic() + cap
        try:
            self.send({"id": request_id, "command": command, "args": args})
            while True:
                reply = json.loads(self.line(self.idle_timeout, deadline))
                if "error" in reply:  # ours, or one with id null (FORBIDDEN, BAD_MESSAGE) sent before reading it
                    error = reply["error"]
                    raise ClientError(str(error.get("code")), str(error.get("message")))
                if "result" in reply and reply.get("id") == request_id:
                    return reply["result"]
        except TimeoutError:
            if time.monotonic() < deadline:
                raise no_answer(self.pid, self.idle_timeout, command) from None
            raise ClientError("TIMEOUT", f"the prun daemon (pid {self.pid}) is still working on {command} after "
                                         f"{cap:g} s; stopped waiting (prun ls shows how it ends)") from None
        except (ConnectionError, ValueError) as exc:
            raise ClientError("INTERNAL", f"the daemon closed the connection ({exc})") from None

    def send(self, request: dict[str, Any]) -> None:
        """Send a request; a daemon that closed the connection at once may have said why (FORBIDDEN, BUSY): that
        line is read next."""
        self.sock.settimeout(self.idle_timeout)
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def line(self, idle: float | None, deadline: float | None = None) -> bytes:
        """The next line, waited for `idle` seconds at most (None: for ever) and not past `deadline`;
        TimeoutError, or ConnectionError when the daemon closed the connection."""
        while b"\n" not in self.buffer:
            wait = idle
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("overdue")
                wait = left if wait is None else min(wait, left)
            self.sock.settimeout(wait)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("no reply")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def events(self) -> Iterator[dict[str, Any]]:
        """After a subscribe: each event as the daemon sends it, waited for without limit, until it closes."""
        with self:
            while True:
                try:
                    line = self.line(None)
                except ConnectionError:
                    return
                yield json.loads(line)
