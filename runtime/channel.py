"""The control channel between the master and one worker.

An AF_UNIX SOCK_SEQPACKET socketpair: one JSON message per datagram, file descriptors riding
along as SCM_RIGHTS. Both sides use this module; the message names below are the whole protocol.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
from collections.abc import Callable
from typing import Any

# master -> worker
BOOT = "boot"  # {"options": {...}, "listeners": [{"kind", "address"}...]} + one fd per listener
DRAIN = "drain"  # {"timeout": seconds}: stop accepting, finish in-flight work, exit 0
CONN = "conn"  # one accepted connection fd (leastconn balancing)
LOG_FILE = "log_file"  # the reopened log file's fd: becomes the worker's stdout and stderr (USR1)
# worker -> master
READY = "ready"  # {"pid"}: serving
BOOT_ERROR = "boot_error"  # {"message", "traceback"}: could not start; the worker exits 3
HEARTBEAT = "hb"  # {"conns", "requests"}: the loop is alive; live stats
RECYCLE = "recycle"  # {"requests"}: max-requests reached, please replace me

MAX_MESSAGE = 256 * 1024
MAX_FDS = 64

Message = dict[str, Any]


def pair() -> tuple[socket.socket, socket.socket]:
    """A new channel: (master end, worker end). Both ends are non-inheritable."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(kind: str, **fields: Any) -> bytes:
    fields["t"] = kind
    data = json.dumps(fields, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"control message {kind!r} is {len(data)} bytes, over {MAX_MESSAGE}")
    return data


def send(sock: socket.socket, kind: str, fds: list[int] | None = None, **fields: Any) -> None:
    """Send one message (blocking socket or not: messages are small and the buffer large)."""
    data = encode(kind, **fields)
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[Message | None, list[int]]:
    """Receive one message; (None, []) on EOF. Received fds are made non-inheritable at once."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, type_, cdata in ancdata:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    received = list(fds)
    for fd in received:
        os.set_inheritable(fd, False)
    if not data:
        for fd in received:
            os.close(fd)
        return None, []
    return json.loads(data), received


class AsyncChannel:
    """One end of a channel driven by an asyncio loop: a callback per message, one on EOF."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Message, list[int]], None],
        on_eof: Callable[[], None],
    ) -> None:
        self.sock = sock
        self.loop = loop
        self._on_message = on_message
        self._on_eof = on_eof
        self.closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self.pump)

    def pump(self) -> None:
        """Handle every message already waiting (also called before a peer's exit is handled)."""
        while not self.closed:
            try:
                msg, fds = recv(self.sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = None, []
            if msg is None:
                self.close()
                self._on_eof()
                return
            self._on_message(msg, fds)

    def send(self, kind: str, fds: list[int] | None = None, **fields: Any) -> bool:
        """Send a message; False if the other end is gone or the buffer is full."""
        if self.closed:
            return False
        try:
            send(self.sock, kind, fds, **fields)
            return True
        except (BlockingIOError, InterruptedError, OSError):
            return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
