"""What the container shim runs inside a worker: one Server serving every listener.

Each interface (stream, protocol, ASGI/WSGI HTTP) implements this contract; the shim only speaks to it.
"""

from __future__ import annotations

import abc
import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from prun.runtime import tls
from prun.runtime.handshakes import Handshakes
from prun.runtime.options import EXIT_BOOT_FAILURE, WorkerOptions


class BootError(Exception):
    """The worker cannot start serving; the message is shown to the user as is."""

    def __init__(self, message: str, exit_code: int = EXIT_BOOT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # the worker's exit status: 3, or the code the app passed to sys.exit


# At most this many connections are accepted per wake-up of a TLS listener, so workers share a burst.
ACCEPT_BATCH = 16
ACCEPT_RETRY_SECONDS = 0.1

# libuv accepts one connection per turn of the loop: a busy worker under a fast stream of new
# connections turned its whole loop (epoll_wait, the ready queue) once per connection, and wrote each
# response apart, while the next connections waited in the queue. A worker that opens WIDE_ABOVE new
# connections a second and is busy at least BUSY_ABOVE of the time serves each plain listener through
# WIDE_HANDLES duplicate fds, and so accepts up to that many connections per turn. Below NARROW_BELOW
# new connections a second, or BUSY_BELOW of its time, it serves it through one again: every duplicate
# wakes for each new connection, and when the queue seldom holds more than one, all but one find it
# empty. Measured over PACE_SECONDS.
WIDE_HANDLES = 8
WIDE_ABOVE = 1000.0
NARROW_BELOW = 250.0
BUSY_ABOVE = 0.5
BUSY_BELOW = 0.25
PACE_SECONDS = 0.25


class Listening(Protocol):
    """A listener being served: a PlainListening, or a TlsAcceptor."""

    def close(self) -> None: ...


class Server(abc.ABC):
    """A worker's server. The shim calls startup, serve, then drain; in leastconn mode accept, and
    start_accepting / stop_accepting while it is the only worker."""

    def __init__(self, app: Any, options: WorkerOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.options = options
        self.loop = loop
        self.connections = 0  # open right now
        self.requests = 0  # served since start (a connection counts as one for stream/protocol apps)
        # Set by the shim: called when `connections` changed in a way the master should hear at once.
        self.on_change: Callable[[], None] = lambda: None
        # max-requests: when `requests` reaches request_limit (0: never), call on_limit once.
        self.request_limit = 0
        self.on_limit: Callable[[], None] = lambda: None
        self._handing_over: set[asyncio.Task[None]] = set()
        self._servers: list[Listening] = []  # the listeners being accepted on
        self._switches = 0  # start_accepting / stop_accepting calls: a start that a stop overtook gives up
        self.made = 0  # connections accepted on plain listeners since start (the pace of new connections)
        self._made_then = 0
        self._paced_at = 0.0
        self._cpu_then = 0.0
        self._pacer: asyncio.TimerHandle | None = None
        self.wide = False  # plain listeners are served through WIDE_HANDLES fds each
        self._widening: set[asyncio.Task[None]] = set()
        self.going_away = False  # set by the shim before drain: the master stops, no new generation follows
        # TLS: loaded from the files as they are at this worker's boot (a reload loads them again).
        try:
            self.ssl: ssl.SSLContext | None = tls.server_context(options)
        except tls.TlsError as exc:
            raise BootError(str(exc)) from None
        self.ssl_handshake_timeout = tls.handshake_timeout(options) if self.ssl is not None else None
        self.handshakes = Handshakes(loop, options.limit_tls_handshakes)  # in progress (TLS), capped

    async def start_accepting(self, listeners: list[socket.socket]) -> None:
        """Accept on every listener (shared mode from boot on; leastconn while this worker is alone).

        Each is served as a duplicate, which stop_accepting closes: the fds from the master stay
        open in this worker, ready for the next start_accepting.
        """
        if self._servers:
            return
        self._switches += 1
        switch = self._switches
        for sock in listeners:
            listening = await self.listen(sock.dup())
            if switch != self._switches:  # stop_accepting was called meanwhile
                listening.close()
                return
            self._servers.append(listening)
        if self._pacer is None:
            self._made_then, self._paced_at, self._cpu_then = self.made, self.loop.time(), time.process_time()
            self._pacer = self.loop.call_later(PACE_SECONDS, self._pace)

    def stop_accepting(self) -> None:
        """Stop accepting; connections wait in the kernel's queue for the master or another worker.

        Never shutdown() a listener: the socket is shared with the master and every other worker.
        """
        self._switches += 1
        for listening in self._servers:
            listening.close()  # this worker's duplicates only
        self._servers.clear()
        if self._pacer is not None:
            self._pacer.cancel()
            self._pacer = None
        self.wide = False

    def _pace(self) -> None:
        """Once every PACE_SECONDS while accepting: widen or narrow the plain listeners to the pace."""
        now, cpu = self.loop.time(), time.process_time()
        elapsed = max(now - self._paced_at, 1e-3)
        rate, busy = (self.made - self._made_then) / elapsed, (cpu - self._cpu_then) / elapsed
        self._made_then, self._paced_at, self._cpu_then = self.made, now, cpu
        plain = [listening for listening in self._servers if isinstance(listening, PlainListening)]
        if not self.wide and rate >= WIDE_ABOVE and busy >= BUSY_ABOVE:
            self.wide = True
            for listening in plain:
                task = self.loop.create_task(listening.widen())
                self._widening.add(task)
                task.add_done_callback(self._widening.discard)
        elif self.wide and (rate < NARROW_BELOW or busy < BUSY_BELOW):
            self.wide = False
            for listening in plain:
                listening.narrow()
        self._pacer = self.loop.call_later(PACE_SECONDS, self._pace)

    @property
    def accepting(self) -> bool:
        return bool(self._servers)

    async def listen(self, sock: socket.socket) -> Listening:
        """Start accepting on one listener; close() stops (and closes the socket given).

        Plain TCP: loop.create_server. TLS: the worker accepts itself and serves each connection as
        it serves a handed-over one (accept), its handshake a task that settle() waits for, so that a
        drain never drops a handshake in flight (a create_server(ssl=...) server would, on close).
        """
        if self.ssl is not None:
            return TlsAcceptor(self, sock)
        listening = PlainListening(self, sock)
        await listening.add(sock)
        return listening

    def counted_protocol(self) -> asyncio.Protocol:
        """The protocol factory of the plain listeners: a new connection, counted."""
        self.made += 1
        return self.protocol()

    async def startup(self) -> None:  # noqa: B027 (optional hook: most servers need no startup)
        """Prepare the app before any listener is served (ASGI lifespan startup). Raise BootError."""

    @abc.abstractmethod
    async def serve(self, listeners: list[socket.socket]) -> None:
        """Start accepting on every listener; return once accepting."""

    @abc.abstractmethod
    def protocol(self) -> asyncio.Protocol:
        """A protocol instance for one new connection."""

    def accept(self, conn: socket.socket) -> None:
        """Serve one accepted connection: handed over by the master (leastconn), or a TLS listener's."""
        conn.setblocking(False)
        task = self.loop.create_task(self._serve_handed_over(conn))
        self._handing_over.add(task)
        task.add_done_callback(self._handing_over.discard)
        if self.ssl is not None:
            self.handshakes.start(task)  # (at --limit-tls-handshakes, the oldest in progress is cut)

    async def _serve_handed_over(self, conn: socket.socket) -> None:
        try:
            # With TLS the handshake runs here, in the worker, bounded by ssl_handshake_timeout.
            if self.ssl is None:
                await self.loop.connect_accepted_socket(self.protocol, conn)
            else:
                await self.loop.connect_accepted_socket(self.protocol, conn, ssl=self.ssl,
                                                        ssl_handshake_timeout=self.ssl_handshake_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            conn.close()

    async def settle(self) -> None:
        """Wait until every connection accepted or handed over is being served, so that a drain counts it."""
        # A connection accepted on the last turn of the loop gets its connection_made on this turn, after
        # the caller's step: let it run first.
        await asyncio.sleep(0)
        # Only the tasks not done yet: a done one leaves the set by a callback, which runs only once this
        # yields, and a gather of done tasks alone (Python 3.12+) is itself done without yielding.
        while pending := [task for task in self._handing_over if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    @abc.abstractmethod
    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight work finish (at most `timeout` s), close, then shut the app down.

        Never shutdown() a listener: the socket is shared with the master and every other worker.
        """


class PlainListening:
    """A plain (TCP or Unix) listener served by loop.create_server, through one fd or WIDE_HANDLES."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock  # served by the first handle, and duplicated for the others
        self.handles: list[asyncio.AbstractServer] = []
        self.closed = False

    async def add(self, sock: socket.socket) -> None:
        server = self.server
        # create_server calls listen() again on the shared socket: keep the master's backlog.
        handle = await server.loop.create_server(server.counted_protocol, sock=sock, backlog=server.options.backlog)
        if self.closed:  # closed while this one was being made
            handle.close()
        else:
            self.handles.append(handle)

    async def widen(self) -> None:
        server = self.server
        while server.wide and not self.closed and 0 < len(self.handles) < WIDE_HANDLES:
            try:
                sock = self.sock.dup()
            except OSError:  # out of fds: serve through those there are
                return
            try:
                await self.add(sock)
            except OSError:
                sock.close()
                return
        if not server.wide:  # narrowed while this one widened
            self.narrow()

    def narrow(self) -> None:
        while len(self.handles) > 1:
            self.handles.pop().close()

    def close(self) -> None:
        self.closed = True
        for handle in self.handles:
            handle.close()
        self.handles.clear()


class TlsAcceptor:
    """Accepts on a TLS listener, handing each connection to Server.accept (its handshake runs there)."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        sock.setblocking(False)
        self.fd = sock.fileno()
        server.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        handshakes = self.server.handshakes
        for _ in range(ACCEPT_BATCH):
            if handshakes.full() and not handshakes.may_cut():
                # At --limit-tls-handshakes: new connections wait in the kernel's queue (or for another
                # worker) until a handshake ends, or the oldest has run long enough to be cut.
                self.server.loop.remove_reader(self.fd)
                handshakes.wait(self._resume)
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it, or the queue is empty
            except OSError:
                # Out of fds and the like: the connection waits in the kernel queue; look again in a
                # moment rather than spin on a listener that stays readable.
                loop = self.server.loop
                loop.remove_reader(self.fd)
                loop.call_later(ACCEPT_RETRY_SECONDS, self._resume)
                return
            self.server.accept(conn)

    def _resume(self) -> None:
        if self.fd >= 0:
            self.server.loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if self.fd >= 0:
            self.server.loop.remove_reader(self.fd)
            self.fd = -1
            self.sock.close()  # this worker's copy; the master and the other workers keep the listener
