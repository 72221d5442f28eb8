"""leastconn balancing: the master accepts and hands each connection to the least-loaded worker.

A connection goes over the worker's control channel (SCM_RIGHTS) to the READY, non-draining worker
with the fewest open connections (ties in turn). The master keeps its copy of each handed-off
connection until the worker acknowledges it, so one that was queued to a worker that died is handed
to another instead of being dropped. A worker sitting on a hand-off it has not acknowledged (stopped,
or its loop blocked) gets new connections only when no other can take them; what waits in the master
goes out as soon as a worker acknowledges. Out of fds, accepting pauses on a timer instead of spinning.
The master skips all that, and tells the workers to accept on the listeners themselves (channel.Accept,
the fds they got at boot) while it stops polling them, in two cases:

- exactly one worker can take connections (READY, not draining, not aborted): it accepts alone; as soon
  as a second one is READY, it is told to stop and the master accepts again;
- new connections come faster than DIRECT_ABOVE a second (measured from the workers' heartbeats): a
  hand-off costs the master and the worker about 34 µs of CPU, which at that rate outweighs what it
  balances (such connections are short, and a busy worker takes fewer from the kernel's queue by
  itself). The kernel balances, as in `shared` mode, until the rate falls below HAND_OFF_BELOW.

The listeners stay open in the master throughout, so a connection that arrives during a switch waits
in the kernel's queue; what the master holds (pending, in flight) is handed out as ever. In `shared`
mode none of this runs: the kernel balances.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import deque
from typing import TYPE_CHECKING

from prun.cluster.log import plural
from prun.cluster.worker import State, WorkerProcess
from prun.runtime import channel

if TYPE_CHECKING:
    from prun.cluster.listeners import Listener
    from prun.cluster.log import Log

ACCEPTS_PER_WAKEUP = 64
PAUSE_FIRST = 0.05  # out of fds: the first pause of accepting; doubled up to PAUSE_CAP
PAUSE_CAP = 1.0
STALLED_AFTER = 0.5  # a worker holding a hand-off unacknowledged this long gets others only as a last resort
# New connections per second (all workers together) above which the workers accept themselves, and below
# which the master hands off again; a worker's rate is measured over RATE_SECONDS at least, and counts
# for RATE_FRESH seconds (a worker that stopped reporting stops counting).
DIRECT_ABOVE = 1000.0
HAND_OFF_BELOW = 250.0
RATE_SECONDS = 0.25
RATE_FRESH = 2.5
_CONN = channel.Conn()
_ALONE = channel.Accept(on=True)
_STOP = channel.Accept(on=False)


class LeastConn:
    """The master's accept loop and hand-off queue."""

    def __init__(self, listeners: list[Listener], loop: asyncio.AbstractEventLoop, log: Log) -> None:
        self.listeners = listeners
        self.loop = loop
        self.log = log
        self.workers: list[WorkerProcess] = []  # every worker that may take connections, in spawn order
        self.pending: deque[socket.socket] = deque()  # accepted, not yet handed to anyone
        self.turn = 0
        self.accepting = False  # started and not stopped
        self.polling = False  # the listeners are in the loop's readers
        self.direct: set[WorkerProcess] = set()  # the workers told to accept on the listeners themselves
        self.fast = False  # new connections come faster than the hand-off pays (DIRECT_ABOVE)
        self.pause: asyncio.TimerHandle | None = None  # out of fds: accepting resumes when it fires
        self.backoff = PAUSE_FIRST
        self.paused_since = 0.0
        self._warned: set[int] = set()

    def start(self) -> None:
        self.accepting = True
        self._switch()

    def stop(self) -> None:
        """Stop accepting; new connections wait in the kernel's queue (a lone worker drains next)."""
        if self.accepting:
            self.accepting = False
            if self.pause is not None:
                self.pause.cancel()
                self.pause = None
            self.direct.clear()
            self._poll()

    def _poll(self) -> None:
        """Watch the listeners exactly when the master accepts: started, no worker accepting itself, not paused."""
        on = self.accepting and not self.direct and self.pause is None
        if on == self.polling:
            return
        self.polling = on
        for listener in self.listeners:
            if on:
                self.loop.add_reader(listener.sock.fileno(), self._accept, listener.sock)
            else:
                self.loop.remove_reader(listener.sock.fileno())

    def _switch(self) -> None:
        """A worker's state or the connection rate changed: who accepts on the listeners themselves?

        Every worker that can take connections, while there is only one or connections come fast;
        otherwise none, and the master hands off.
        """
        if not self.accepting:
            return
        able = [w for w in self.workers if w.state is State.READY and not w.aborted and w.chan is not None]
        wanted = set(able) if len(able) == 1 or self.fast else set()
        before = set(self.direct)
        for worker in before - wanted:
            self.direct.discard(worker)
            if worker.state is State.READY and worker.chan is not None:
                worker.chan.send(_STOP)  # both accept for a moment: no connection waits meanwhile
        for worker in able:
            if worker in wanted and worker not in self.direct and worker.chan is not None:
                if worker.chan.send(_ALONE):
                    self.direct.add(worker)
        if self.direct != before:
            if len(self.direct) == 1 and len(able) == 1:
                (lone,) = self.direct
                self.log.debug(f"balance: {lone.describe()} accepts alone")
            elif len(self.direct) > 1 and len(before) < 2:
                self.log.debug(f"balance: {len(self.direct)} workers accept directly "
                              f"({self.rate():.0f} new connections/s)")
            elif before and not self.direct:
                self.log.debug(f"balance: master hands off to {plural(len(able), 'worker')}" if able
                              else "balance: master accepts (no worker can take connections yet)")
        self._poll()

    def rate(self) -> float:
        """New connections per second, all workers together (those heard from lately)."""
        fresh = self.loop.time() - RATE_FRESH
        return sum(w.rate for w in self.workers if w.rate_since >= fresh and w.state is State.READY)

    def heard(self, worker: WorkerProcess) -> None:
        """A worker's heartbeat or report: measure its connection rate, and switch on a change of pace."""
        now = self.loop.time()
        if not worker.rate_since:
            worker.rate_since, worker.rate_opened = now, worker.opened
            return
        if now - worker.rate_since < RATE_SECONDS:
            return
        worker.rate = (worker.opened - worker.rate_opened) / (now - worker.rate_since)
        worker.rate_since, worker.rate_opened = now, worker.opened
        rate = self.rate()
        fast = rate >= HAND_OFF_BELOW if self.fast else rate >= DIRECT_ABOVE
        if fast != self.fast:
            self.fast = fast
            self._switch()

    def _out_of_fds(self, exc: OSError) -> None:
        """EMFILE and friends: the listener stays readable, so stop watching it for a while (no spin)."""
        if self.pause is not None:
            return
        if self.backoff == PAUSE_FIRST:
            self.paused_since = self.loop.time()
            self.log.error(f"accept failed: {exc.strerror or exc}; pausing accepting, retrying every "
                           f"{PAUSE_FIRST:g}s to {PAUSE_CAP:g}s (connections wait in the kernel's queue)")
        self.pause = self.loop.call_later(self.backoff, self._resume)
        self._poll()
        self.backoff = min(PAUSE_CAP, self.backoff * 2)

    def _resume(self) -> None:
        self.pause = None
        self._poll()

    # Hot path: one call per accepted connection.
    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_fds(exc)
                    break
                if exc.errno not in self._warned:  # ECONNABORTED and the like: that client is gone
                    self._warned.add(exc.errno or 0)
                    self.log.error(f"accept failed: {exc.strerror or exc}")
                continue
            if self.backoff != PAUSE_FIRST:
                self.backoff = PAUSE_FIRST
                self.log.info(f"accepting again after {self.loop.time() - self.paused_since:.1f}s")
            self.pending.append(conn)
        self.dispatch()

    def load(self, worker: WorkerProcess) -> int:
        return worker.conns + len(worker.inflight)

    def dispatch(self) -> None:
        """Hand every pending connection to a worker; those no worker can take now stay queued."""
        now = self.loop.time()
        while self.pending:
            if not self._hand_off(self.pending[0], now):
                return
            self.pending.popleft()

    def _pick(self, refused: set[int], now: float) -> int | None:
        """The READY worker with the least load; one that sits on unacknowledged hand-offs (stopped or
        hung: the heartbeat watchdog will tell) only if no other can take the connection."""
        best: int | None = None
        best_stalled = True
        for step in range(len(self.workers)):
            index = (self.turn + step) % len(self.workers)
            worker = self.workers[index]
            if worker.state is not State.READY or worker.aborted or index in refused:
                continue
            stalled = bool(worker.inflight) and now - worker.waiting_since > STALLED_AFTER
            if (best is None or (best_stalled and not stalled)
                    or (stalled == best_stalled and self.load(worker) < self.load(self.workers[best]))):
                best, best_stalled = index, stalled
        return best

    def _hand_off(self, conn: socket.socket, now: float) -> bool:
        refused: set[int] = set()
        while (index := self._pick(refused, now)) is not None:
            worker = self.workers[index]
            if worker.chan is not None and worker.chan.send(_CONN, fds=[conn.fileno()]):
                if not worker.inflight:
                    worker.waiting_since = now
                worker.inflight.append(conn)
                self.turn = index + 1
                return True
            refused.add(index)  # its channel is full or gone: try the next one
        return False

    def add(self, worker: WorkerProcess) -> None:
        self.workers.append(worker)

    def ready(self, worker: WorkerProcess) -> None:
        self._switch()
        self.dispatch()

    def draining(self, worker: WorkerProcess) -> None:
        """A worker was told to drain (it stops accepting, if it did, by itself)."""
        self._switch()

    def acknowledged(self, worker: WorkerProcess, accepted: int) -> None:
        """The worker took `accepted` connections in all: the master's copies of those can go."""
        if worker.acked < accepted:
            worker.waiting_since = self.loop.time()  # it takes connections: what it still holds is recent
        while worker.acked < accepted and worker.inflight:
            worker.inflight.popleft().close()
            worker.acked += 1
        if self.pending:
            self.dispatch()  # its channel had filled up, or it had too many: it can take more now

    def gone(self, worker: WorkerProcess) -> None:
        """A worker exited: what it never took is handed to the others."""
        if worker in self.workers:
            self.workers.remove(worker)
        if worker.inflight:
            self.log.warning(f"{worker.describe()} exited with {len(worker.inflight)} connections it had not "
                             "taken yet; handing them to other workers")
            self.pending.extendleft(reversed(worker.inflight))
            worker.inflight.clear()
        self._switch()
        self.dispatch()

    def close(self) -> None:
        self.stop()
        while self.pending:
            self.pending.popleft().close()
