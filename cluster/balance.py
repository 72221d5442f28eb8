"""leastconn balancing: the master accepts and hands each connection to the least-loaded worker.

A connection goes over the worker's control channel (SCM_RIGHTS) to the READY, non-draining worker
with the fewest open connections (ties in turn). The master keeps its copy of each handed-off
connection until the worker acknowledges it, so one that was queued to a worker that died is handed
to another instead of being dropped. In `shared` mode none of this runs: the kernel balances.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import deque
from typing import TYPE_CHECKING

from prun.cluster.worker import State, WorkerProcess
from prun.runtime import channel

if TYPE_CHECKING:
    from prun.cluster.listeners import Listener
    from prun.cluster.log import Log

ACCEPTS_PER_WAKEUP = 64
_CONN = channel.Conn()


class LeastConn:
    """The master's accept loop and hand-off queue."""

    def __init__(self, listeners: list[Listener], loop: asyncio.AbstractEventLoop, log: Log) -> None:
        self.listeners = listeners
        self.loop = loop
        self.log = log
        self.workers: list[WorkerProcess] = []  # every worker that may take connections, in spawn order
        self.pending: deque[socket.socket] = deque()  # accepted, not yet handed to anyone
        self.turn = 0
        self.accepting = False
        self._warned: set[int] = set()

    def start(self) -> None:
        self.accepting = True
        for listener in self.listeners:
            self.loop.add_reader(listener.sock.fileno(), self._accept, listener.sock)

    def stop(self) -> None:
        """Stop accepting; new connections wait in the kernel's queue."""
        if self.accepting:
            self.accepting = False
            for listener in self.listeners:
                self.loop.remove_reader(listener.sock.fileno())

    # Hot path: one call per accepted connection.
    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # EMFILE and friends: leave the rest in the kernel queue
                if exc.errno not in self._warned:
                    self._warned.add(exc.errno or 0)
                    self.log.error(f"accept failed: {exc.strerror or exc}")
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    break
                continue
            self.pending.append(conn)
        self.dispatch()

    def load(self, worker: WorkerProcess) -> int:
        return worker.conns + len(worker.inflight)

    def dispatch(self) -> None:
        """Hand every pending connection to a worker; those no worker can take now stay queued."""
        while self.pending:
            if not self._hand_off(self.pending[0]):
                return
            self.pending.popleft()

    def _hand_off(self, conn: socket.socket) -> bool:
        count = len(self.workers)
        refused: set[int] = set()
        while True:
            best: WorkerProcess | None = None
            best_index = 0
            for step in range(count):
                index = (self.turn + step) % count
                worker = self.workers[index]
                if (worker.state is State.READY and index not in refused
                        and (best is None or self.load(worker) < self.load(best))):
                    best, best_index = worker, index
            if best is None:
                return False
            if best.chan is not None and best.chan.send(_CONN, fds=[conn.fileno()]):
                best.inflight.append(conn)
                self.turn = best_index + 1
                return True
            refused.add(best_index)  # its channel is full or gone: try the next one

    def add(self, worker: WorkerProcess) -> None:
        self.workers.append(worker)

    def ready(self, worker: WorkerProcess) -> None:
        self.dispatch()

    def acknowledged(self, worker: WorkerProcess, accepted: int) -> None:
        """The worker took `accepted` connections in all: the master's copies of those can go."""
        while worker.acked < accepted and worker.inflight:
            worker.inflight.popleft().close()
            worker.acked += 1

    def gone(self, worker: WorkerProcess) -> None:
        """A worker exited: what it never took is handed to the others."""
        if worker in self.workers:
            self.workers.remove(worker)
        if worker.inflight:
            self.log.warning(f"{worker.describe()} exited with {len(worker.inflight)} connections it had not "
                             "taken yet; handing them to other workers")
            self.pending.extendleft(reversed(worker.inflight))
            worker.inflight.clear()
        self.dispatch()

    def close(self) -> None:
        self.stop()
        while self.pending:
            self.pending.popleft().close()
