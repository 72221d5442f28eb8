"""The control channel between the master and one worker.

An AF_UNIX SOCK_SEQPACKET socketpair: one JSON message per datagram, file descriptors riding along
as SCM_RIGHTS. Both sides use this module: the dataclasses below are the whole protocol, so that
mypy checks every field where a message is built and where it is read.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

MAX_MESSAGE = 256 * 1024
MAX_FDS = 64


# ---- master -> worker ------------------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """The first message: the worker's options (WorkerOptions.to_dict()); one fd per listener rides along
    (under leastconn too: the worker accepts on them only while told to, see Accept)."""

    KIND: ClassVar[str] = "boot"
    options: dict[str, Any]


@dataclass(frozen=True)
class Drain:
    """Stop accepting, finish in-flight work within `timeout` seconds, exit 0."""

    KIND: ClassVar[str] = "drain"
    timeout: float
    stopping: bool = False  # the master stops (TERM), rather than replacing the worker


@dataclass(frozen=True)
class Conn:
    """One accepted connection's fd rides along (leastconn balancing)."""

    KIND: ClassVar[str] = "conn"


@dataclass(frozen=True)
class Accept:
    """leastconn: accept on the listeners sent at boot (on: this worker is the only one that can take
    connections, or new connections come too fast for the master's hand-off to pay) or stop (off: the
    master hands connections out again). Never sent to a draining worker."""

    KIND: ClassVar[str] = "accept"
    on: bool


@dataclass(frozen=True)
class LogFile:
    """The reopened log file's fd rides along: it becomes the worker's stdout and stderr (USR1)."""

    KIND: ClassVar[str] = "log_file"


# ---- worker -> master ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The worker serves."""

    KIND: ClassVar[str] = "ready"
    pid: int
    rss: int = 0  # resident memory in bytes, as it starts serving (0: unknown)


@dataclass(frozen=True)
class BootFailure:
    """The worker could not start (it exits with a boot-failure code): why, and the app's traceback."""

    KIND: ClassVar[str] = "boot_error"
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Heartbeat:
    """The worker's loop is alive; its live stats. `accepted`: connections taken from the master in all;
    `opened`: connections opened in all, however they came (the master's measure of the connection rate)."""

    KIND: ClassVar[str] = "hb"
    conns: int
    requests: int
    accepted: int = 0
    rss: int = 0  # resident memory in bytes (0: unknown)
    opened: int = 0


@dataclass(frozen=True)
class Recycle:
    """max-requests reached: please replace me."""

    KIND: ClassVar[str] = "recycle"
    requests: int


ToWorker = Boot | Drain | Conn | Accept | LogFile
ToMaster = Ready | BootFailure | Heartbeat | Recycle
Message = ToWorker | ToMaster


class ProtocolError(ValueError):
    """A datagram that is not one of a protocol's messages."""


class Codec:
    """One protocol's messages (frozen dataclasses with a KIND) to and from JSON datagrams.

    This module's messages are the worker channel's (CODEC); the daemon's control channel to each master
    (cluster/control.py) declares its own set and reuses the framing.
    """

    def __init__(self, *classes: type[Any]) -> None:
        self.kinds: dict[str, type[Any]] = {cls.KIND: cls for cls in classes}
        self.fields = {cls: frozenset(f.name for f in dataclasses.fields(cls)) for cls in classes}

    def encode(self, msg: Any) -> bytes:
        fields = dict(msg.__dict__)
        fields["t"] = msg.KIND
        data = json.dumps(fields, separators=(",", ":")).encode()
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"control message {msg.KIND!r} is {len(data)} bytes, over {MAX_MESSAGE}")
        return data

    def decode(self, data: bytes) -> Any:
        """A message from a datagram. Unknown fields are dropped: a peer of a newer prun may send more."""
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"control message is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ProtocolError("control message is not an object")
        cls = self.kinds.get(raw.pop("t", None))
        if cls is None:
            raise ProtocolError(f"unknown control message {data[:80]!r}")
        names = self.fields[cls]
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except TypeError as exc:
            raise ProtocolError(f"control message {cls.KIND!r}: {exc}") from None


CODEC = Codec(Boot, Drain, Conn, Accept, LogFile, Ready, BootFailure, Heartbeat, Recycle)


def encode(msg: Message) -> bytes:
    return CODEC.encode(msg)


def decode(data: bytes) -> Message:
    """A message of the worker channel from a datagram (ProtocolError if it is none)."""
    msg: Message = CODEC.decode(data)
    return msg


def pair() -> tuple[socket.socket, socket.socket]:
    """A new channel: (master end, worker end). Both ends are non-inheritable."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, msg: Any, fds: list[int] | None = None, codec: Codec = CODEC) -> None:
    """Send one message (blocking socket or not: messages are small and the buffer large)."""
    data = codec.encode(msg)
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(sock: socket.socket, codec: Codec = CODEC) -> tuple[Any, list[int]]:
    """Receive one message; (None, []) on EOF. Received fds are made non-inheritable at once.

    A datagram that is no message raises ProtocolError (its fds are closed first).
    """
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
    try:
        return codec.decode(data), received
    except ProtocolError:
        for fd in received:
            os.close(fd)
        raise


class AsyncChannel:
    """One end of a channel driven by an asyncio loop: a callback per message, one on EOF."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Any, list[int]], None],
        on_eof: Callable[[], None],
        codec: Codec = CODEC,
    ) -> None:
        self.sock = sock
        self.codec = codec
        self.loop = loop
        self._on_message = on_message
        self._on_eof = on_eof
        self.closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self.pump)

    def pump(self) -> None:
        """Handle every message already waiting (also called before a peer's exit is handled)."""
        reset = False
        while not self.closed:
            try:
                msg, fds = recv(self.sock, self.codec)
            except ConnectionResetError:
                # the peer closed before reading what we sent: the kernel says so once, and what the peer
                # sent before it closed is still queued behind that error (its last words: read them)
                if reset:
                    msg, fds = None, []
                else:
                    reset = True
                    continue
            except (BlockingIOError, InterruptedError):
                if not reset:
                    return
                msg, fds = None, []  # it is gone: nothing more will come
            except ProtocolError:
                continue  # not ours to act on; the next datagram is still a message
            except OSError:
                msg, fds = None, []
            if msg is None:
                self.close()
                self._on_eof()
                return
            self._on_message(msg, fds)

    def send(self, msg: Any, fds: list[int] | None = None) -> bool:
        """Send a message; False if the other end is gone or the buffer is full."""
        if self.closed:
            return False
        try:
            send(self.sock, msg, fds, self.codec)
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
