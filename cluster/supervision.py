"""Supervision: keeps every slot's worker alive.

A slot's own worker that exits while not draining is restarted with exponential backoff (100 ms x1.5,
capped at 15 s, reset once a worker was up 30 s). A worker whose loop sent no heartbeat for --timeout
gets SIGABRT (faulthandler prints its stack), then SIGKILL.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterable

from prun.cluster.log import Log
from prun.cluster.rollout import Rollout, Slot
from prun.cluster.worker import State, WorkerProcess, describe_exit

BACKOFF_FIRST = 0.1
BACKOFF_FACTOR = 1.5
BACKOFF_CAP = 15.0
BACKOFF_RESET_AFTER = 30.0  # a worker up this long earns its slot a fresh backoff
ABORT_GRACE = 2.0  # after SIGABRT (time to print the stack), before SIGKILL


class Supervision:
    """Restarts what died, aborts what hangs."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: Log, rollout: Rollout[WorkerProcess]) -> None:
        self.loop = loop
        self.log = log
        self.rollout = rollout
        self.stopped = False

    def start(self, slot: Slot[WorkerProcess]) -> None:
        """Give `slot` a worker now unless it has a live one; if it cannot start, retry with backoff."""
        slot.restart_timer = None
        if self.stopped or slot not in self.rollout.slots or (slot.worker is not None and slot.worker.alive):
            return
        try:
            self.rollout.fill(slot)
        except OSError as exc:
            self.log.error(f"cannot start worker {slot.index}: {exc}")
            self.schedule_restart(slot)

    def died(self, slot: Slot[WorkerProcess], worker: WorkerProcess, code: int, was_ready: bool) -> None:
        """A slot's own worker exited unasked: say why (a boot error once, not at every retry), restart it."""
        if worker.boot_error:
            if worker.boot_error != slot.last_error:
                self.log.error(f"{worker.describe()} could not boot: {worker.boot_error}",
                               traceback=worker.boot_traceback)
            slot.last_error = worker.boot_error
        else:
            self.log.warning(f"{worker.describe()} {describe_exit(code)}; restarting it")
        if was_ready and time.monotonic() - worker.started >= BACKOFF_RESET_AFTER:
            slot.failures = 0
        slot.worker = None
        slot.restarts += 1
        self.schedule_restart(slot)

    def schedule_restart(self, slot: Slot[WorkerProcess]) -> None:
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * BACKOFF_FACTOR**slot.failures)
        slot.failures += 1
        slot.restart_timer = self.loop.call_later(delay, self.start, slot)

    def abort_hung(self, workers: Iterable[WorkerProcess], timeout: float) -> None:
        """SIGABRT every serving worker whose loop sent no heartbeat for `timeout` s (0: never)."""
        if not timeout:
            return
        now = time.monotonic()
        for worker in workers:
            if (worker.state in (State.READY, State.DRAINING) and not worker.aborted
                    and now - worker.last_heartbeat > timeout):
                self.log.error(f"{worker.describe()} sent no heartbeat for {timeout:g}s: "
                               "aborting it (its stack follows)")
                worker.aborted = True
                worker.signal(signal.SIGABRT)
                worker.kill_timer = self.loop.call_later(ABORT_GRACE, worker.signal, signal.SIGKILL)

    def stop(self) -> None:
        self.stopped = True
        for slot in self.rollout.slots:
            slot.close()
