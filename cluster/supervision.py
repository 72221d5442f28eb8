"""Supervision: keeps every slot's worker alive, and lets nothing a worker started outlive it.

A slot's own worker that exits while not draining is restarted with exponential backoff (100 ms x1.5,
capped at 15 s, reset once a worker was up 30 s). A worker whose loop sent no heartbeat for --timeout
gets SIGABRT (faulthandler prints its stack), then SIGKILL.

Processes an app started do not outlive their worker: the master is a child subreaper, so a worker's
orphaned descendants become the master's children. One whose worker has exited (it carries the worker's
$PRUN_WORKER) gets SIGTERM, then SIGKILL if it is still there a grace later; at a stop, before the master
exits, every one does. (A double-forked helper of a worker that still serves is left alone.) As PID 1
the master adopts every orphan of the container, so there it leaves them alone: the container's end
takes them.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import psutil

from prun.cluster.log import Log
from prun.cluster.rollout import Rollout, Slot
from prun.cluster.worker import TOKEN_VARIABLE, State, WorkerProcess, describe_exit

if TYPE_CHECKING:
    from prun.cluster.config import Config

BACKOFF_FIRST = 0.1
BACKOFF_FACTOR = 1.5
BACKOFF_CAP = 15.0
BACKOFF_RESET_AFTER = 30.0  # a worker up this long earns its slot a fresh backoff
ABORT_GRACE = 2.0  # after SIGABRT (time to print the stack), before SIGKILL
ORPHAN_GRACE = 2.0  # after SIGTERM to a process a worker left behind, before SIGKILL
PR_SET_CHILD_SUBREAPER = 36


def restart_delay(fixed: float, first: float, failures: int) -> float:
    """Seconds before a restart: `fixed` if set (--restart-delay), else the backoff from `first` (x1.5, capped)."""
    if fixed:
        return fixed
    return min(BACKOFF_CAP, (first or BACKOFF_FIRST) * BACKOFF_FACTOR**failures)


def become_subreaper() -> bool:
    """Orphaned descendants of this process's children become its children (Linux 3.4+)."""
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class Supervision:
    """Restarts what died, aborts what hangs, stops what a worker left behind."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: Log, rollout: Rollout[WorkerProcess],
                 workers: dict[int, WorkerProcess], config: Callable[[], Config]) -> None:
        self.loop = loop
        self.config = config  # the restart policy is the config's of the moment (a reload may change it)
        self.log = log
        self.rollout = rollout
        self.workers = workers  # the master's table, by pid
        self.stopped = False
        self.adopting = os.getpid() != 1 and become_subreaper()
        self.orphans_due = False  # a worker exited: its children may be ours now
        self.orphans: dict[int, float] = {}  # pid -> when it was told to stop

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

    def died(self, slot: Slot[WorkerProcess], worker: WorkerProcess, code: int, was_ready: bool) -> str | None:
        """A slot's own worker exited unasked: say why (a boot error once, not at every retry), restart it.

        The restart policy first: None, or why the app must stop instead (a --stop-exit-codes code, more
        than --max-restarts unstable restarts in a row, or under --no-autorestart the last worker gone).
        Under --no-autorestart the slot stays empty (`finished`) and the others serve on.
        """
        policy = self.config()
        if worker.boot_error:
            if worker.boot_error != slot.last_error:
                self.log.error(f"{worker.describe()} could not boot: {worker.boot_error}",
                               traceback=worker.boot_traceback)
            slot.last_error = worker.boot_error
        elif code not in policy.stop_exit_codes:
            then = "restarting it" if policy.autorestart else "not restarting it (--no-autorestart)"
            self.log.warning(f"{worker.describe()} {describe_exit(code)}; {then}")
        slot.worker = None
        if code in policy.stop_exit_codes:
            return f"{worker.describe()} exited with code {code}, one of --stop-exit-codes"
        if not policy.autorestart:
            slot.finished = True
            if not self.rollout.serving:
                return f"{worker.describe()} {worker.boot_error or describe_exit(code)} and no worker is left " \
                       "(--no-autorestart)"
            return None
        up = time.monotonic() - worker.started
        if was_ready and up >= BACKOFF_RESET_AFTER:
            slot.failures = 0
        slot.unstable = slot.unstable + 1 if up < policy.min_uptime or not was_ready else 0
        if policy.max_restarts and slot.unstable > policy.max_restarts:
            why = worker.boot_error or describe_exit(code)
            return (f"worker {slot.index} ended {slot.unstable} times in a row within --min-uptime "
                    f"({policy.min_uptime:g}s) of starting, the last time: {why}; giving up (--max-restarts "
                    f"{policy.max_restarts})")
        slot.restarts += 1
        self.schedule_restart(slot)
        return None

    def schedule_restart(self, slot: Slot[WorkerProcess]) -> None:
        policy = self.config()
        delay = restart_delay(policy.restart_delay, policy.exp_backoff_restart_delay, slot.failures)
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

    def memory_grew(self, worker: WorkerProcess) -> None:
        """A worker's memory doubled since it was last told: make a leak visible (recycling by memory is
        --max-memory-restart's, in recycling.py)."""
        mb = 1024 * 1024
        self.log.warning(f"{worker.describe()} grew to {worker.rss // mb} MB of memory "
                         f"({worker.rss / worker.rss_ready:.1f}x the {worker.rss_ready // mb} MB it had when ready)")
        worker.rss_told = worker.rss

    def stop(self) -> None:
        self.stopped = True
        for slot in self.rollout.slots:
            slot.close()

    def worker_gone(self) -> None:
        self.orphans_due = self.adopting

    def stop_orphans(self, kill_now: bool = False, every: bool = False) -> bool:
        """SIGTERM each adopted process whose worker is gone (`every`: each one), SIGKILL it a grace later.

        True while some are left.
        """
        if not (self.orphans_due or every):
            return False
        try:
            children = psutil.Process().children()
        except psutil.Error:
            return False
        now = time.monotonic()
        serving = {worker.token for worker in self.workers.values()}
        left: dict[int, float] = {}
        for child in children:
            try:
                if child.pid in self.workers or child.status() == psutil.STATUS_ZOMBIE:
                    continue
                if not every and child.environ().get(TOKEN_VARIABLE, "") in serving | {""}:
                    continue  # its worker still serves (or it cleared its environment): the stop takes it
                told = self.orphans.get(child.pid)
                if told is None:
                    self.log.warning(f"process {child.pid} ({child.name()}) was left behind by a worker: stopping it")
                    child.send_signal(signal.SIGTERM)
                    told = now
                if kill_now or now - told >= ORPHAN_GRACE:
                    child.send_signal(signal.SIGKILL)
                left[child.pid] = told
            except psutil.Error:
                continue
        self.orphans = left
        self.orphans_due = bool(left)  # stopping one may orphan its own children: look again
        return bool(left)

    async def sweep(self) -> None:
        """At exit: what the workers left behind goes too (SIGKILL for what is still there a grace later)."""
        deadline = time.monotonic() + ORPHAN_GRACE
        while self.adopting and self.stop_orphans(kill_now=time.monotonic() >= deadline, every=True):
            await asyncio.sleep(0.05)
