"""The control channel between the daemon and each master it runs (and each fork-mode supervisor).

    daemon ──Status / Reload / Scale / Stop (with an id)──▶ master
           ◀──Reply (the same id, when done, with the outcome)──┘
           ◀──events: Online, BootFailed, WorkerStarted, WorkerExited, ReloadStarted, ReloadFinished,
                      Scaled, MemoryLimit, Problem, Ended, Stopping, ReopenLogs

The daemon binds a SOCK_SEQPACKET listener at $PRUN_HOME/apps/<id>.ctl and hands it to the master it starts
(`--control-fd N`); the master accepts the daemon's connection on it (and a later daemon's, after the first
one died: the socket outlives daemons), publishes every event to each connection, and answers each request
on the connection it came on. One JSON message per datagram, framed as the worker channel is
(runtime/channel.py). The daemon's picture of an app comes from these messages alone: a `Status` reply
when it connects, then the events; the master's log lines are for people.

A connection whose buffer is full (a daemon stopped for a long while) is closed rather than waited for:
the daemon, once it runs again, reads what was queued, sees the end, connects again and asks for the
status afresh. Only the master's own user (and root) may connect (SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from prun.runtime.channel import AsyncChannel, Codec

# ---- daemon -> master: requests, each answered by one Reply with its id -------------------------------


@dataclass(frozen=True)
class Status:
    """What runs now: the Reply's `status` is the master's /status (workers, generation, reloading, ...)."""

    KIND: ClassVar[str] = "status"
    id: int


@dataclass(frozen=True)
class Reload:
    """A rolling reload, answered once the reload this request joined has finished (or failed)."""

    KIND: ClassVar[str] = "reload"
    id: int


@dataclass(frozen=True)
class Scale:
    """Scale to `count` workers (at least 1), answered once there, or once a new worker failed to boot."""

    KIND: ClassVar[str] = "scale"
    id: int
    count: int


@dataclass(frozen=True)
class Stop:
    """A graceful stop (as TERM); answered when it has begun: the master's exit ends it."""

    KIND: ClassVar[str] = "stop"
    id: int


@dataclass(frozen=True)
class Reply:
    """The outcome of request `id`: ok, or why not; the worker count after it; `status` for Status."""

    KIND: ClassVar[str] = "reply"
    id: int
    ok: bool
    reason: str = ""
    workers: int = 0
    status: dict[str, Any] | None = None


# ---- master -> daemon: events, as they happen ------------------------------------------------------


@dataclass(frozen=True)
class Online:
    """The first generation is ready: the app serves."""

    KIND: ClassVar[str] = "online"
    workers: int
    generation: int


@dataclass(frozen=True)
class BootFailed:
    """The first generation could not boot: why (the app's own words); the master exits next."""

    KIND: ClassVar[str] = "boot_failed"
    reason: str


@dataclass(frozen=True)
class WorkerStarted:
    KIND: ClassVar[str] = "worker_started"
    slot: int
    pid: int
    generation: int


@dataclass(frozen=True)
class WorkerExited:
    """A worker exited; `restarting`: it died unasked and its slot gets a new one after `delay` s;
    `finished`: it died unasked and stays so (--no-autorestart): the app runs one worker fewer."""

    KIND: ClassVar[str] = "worker_exited"
    slot: int
    pid: int
    generation: int
    reason: str  # "exited with code 1", "killed by SIGKILL", or why it could not boot
    restarting: bool = False
    delay: float = 0.0
    finished: bool = False


@dataclass(frozen=True)
class ReloadStarted:
    """A reload began, whoever asked (a Reload request, HUP, --watch, --cron-restart)."""

    KIND: ClassVar[str] = "reload_started"
    generation: int


@dataclass(frozen=True)
class ReloadFinished:
    KIND: ClassVar[str] = "reload_finished"
    ok: bool
    generation: int  # the one that serves now
    workers: int
    reason: str = ""  # why it failed, and which generation each slot kept


@dataclass(frozen=True)
class Scaled:
    KIND: ClassVar[str] = "scaled"
    workers: int


@dataclass(frozen=True)
class MemoryLimit:
    """A worker passed --max-memory-restart: it alone is replaced, losslessly."""

    KIND: ClassVar[str] = "memory_limit"
    slot: int
    pid: int
    memory: int
    limit: int


@dataclass(frozen=True)
class Problem:
    """Something that went wrong while the app serves (a worker that cannot start or boot); the daemon
    shows it as the app's last error."""

    KIND: ClassVar[str] = "problem"
    message: str


@dataclass(frozen=True)
class Ended:
    """The restart policy stops the app (the master exits next): `errored` past --max-restarts, or not
    (a --stop-exit-codes code, an exit without --autorestart). The daemon does not start it again."""

    KIND: ClassVar[str] = "ended"
    reason: str
    errored: bool


@dataclass(frozen=True)
class Stopping:
    KIND: ClassVar[str] = "stopping"
    graceful: bool = True


@dataclass(frozen=True)
class ReopenLogs:
    """The master got USR1: the daemon's log writer should reopen the app's files."""

    KIND: ClassVar[str] = "reopen_logs"


Request = Status | Reload | Scale | Stop
Event = Online | BootFailed | WorkerStarted | WorkerExited | ReloadStarted | ReloadFinished | Scaled | MemoryLimit \
    | Problem | Ended | Stopping | ReopenLogs

CODEC = Codec(Status, Reload, Scale, Stop, Reply, Online, BootFailed, WorkerStarted, WorkerExited, ReloadStarted,
              ReloadFinished, Scaled, MemoryLimit, Problem, Ended, Stopping, ReopenLogs)
REQUESTS = (Status, Reload, Scale, Stop)


def listener(path: str) -> socket.socket:
    """A new control listener at `path` (0600; a stale socket there is replaced), for a master to inherit."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def trusted(sock: socket.socket) -> bool:
    """Only our own user, or root, may talk over a control connection."""
    try:
        return peer_uid(sock) in (os.getuid(), 0)
    except OSError:
        return False


Handler = Callable[[Any], Awaitable[Reply]]


class ControlServer:
    """The master's end: accepts the daemon's connections, publishes events to each, answers requests."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, handle: Handler) -> None:
        self.sock = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)  # never to a worker
        self.sock.setblocking(False)
        self.loop = loop
        self.handle = handle
        self.connections: list[AsyncChannel] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Take the connections already waiting (the daemon connects as soon as it spawned us), then follow."""
        self.accept()
        self.loop.add_reader(self.sock.fileno(), self.accept)

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and the like: the daemon retries its connection
                return
            if trusted(conn):
                self._open(conn)
            else:
                conn.close()

    def _open(self, conn: socket.socket) -> None:
        this: list[AsyncChannel] = []  # the channel, for its own callbacks
        chan = AsyncChannel(conn, self.loop, lambda msg, fds: self._received(this[0], msg, fds),
                            lambda: self._drop(this[0]), CODEC)
        this.append(chan)
        self.connections.append(chan)

    def _received(self, chan: AsyncChannel, msg: Any, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        if isinstance(msg, REQUESTS):
            self._answer(chan, msg)

    def _answer(self, chan: AsyncChannel, request: Any) -> None:
        async def answer() -> None:
            try:
                reply = await self.handle(request)
            except Exception as exc:  # a bug must not leave the daemon waiting
                reply = Reply(request.id, False, f"{type(exc).__name__}: {exc}")
            if not chan.send(reply):
                self._drop(chan)

        task = self.loop.create_task(answer())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def publish(self, event: Event) -> None:
        """Send an event to every connection; one that cannot take it is closed (its daemon resyncs)."""
        for chan in list(self.connections):
            if not chan.send(event):
                self._drop(chan)

    def _drop(self, chan: AsyncChannel) -> None:
        chan.close()
        if chan in self.connections:
            self.connections.remove(chan)

    def close(self) -> None:
        for chan in list(self.connections):
            self._drop(chan)
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
