"""The rollout: replacing workers as one state machine, one operation at a time.

It owns the slot table, the generations and the queue of requested operations:

    reload (HUP)     gen += 1 (the config is re-read first); for each batch of slots (--reload-batch):
                         start the batch's new workers (candidates)
                         wait until each is READY, or exits, or --ready-timeout passes
                         one is not -> abandon the batch (drain the ready, kill the rest), stop;
                                       every slot not yet rolled keeps its old worker, and the log says
                                       which slots run which generation
                         all ready  -> they take their slots; the old workers drain
    recycle          the same step for one slot (max-requests): the worker is replaced, losslessly
    scale +1 / -1    a new slot once its first worker is READY / the last slot's worker drains

Operations run one after another, and none before the first generation is ready (they wait in the
queue: a worker still booting its first time is nobody's to replace). A HUP while a reload waits in the queue is merged into it
("reload already queued"): two HUPs during one reload give exactly one more. `stop` (TERM) drops the
queue and ends the running operation at once: its candidates are drained or killed, none is left.

Every worker it starts is under the ready deadline, and every worker it drains under the drain
deadline (SIGKILL once --graceful-timeout and a grace have passed). An old worker is never killed
because a new one failed.

The rollout only sees the supervisor through `Supervisor` (spawn, drain, kill, reconfigure) and a
worker through `Worker` (two futures and a description); tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from prun.cluster import control
from prun.cluster.errors import PrunError
from prun.cluster.log import Log, plural
from prun.cluster.notify import Notifier
from prun.cluster.worker import describe_exit

KILL_GRACE = 2.0  # after the drain deadline a worker was told, before SIGKILL
STOPPING = "the master is stopping"  # the outcome of an operation that a stop cut short


class Worker(Protocol):
    """What the rollout needs of a worker."""

    boot_error: str  # why it could not boot; the ready deadline sets it
    ready: asyncio.Future[bool]  # True once READY; False if it exited first
    exited: asyncio.Future[int]  # done once it exited

    def describe(self) -> str: ...

    def why_not_ready(self) -> str: ...


class Settings(Protocol):
    """The settings a rollout follows (a Config has them)."""

    @property
    def reload_batch(self) -> int: ...

    @property
    def ready_timeout(self) -> float: ...  # 0: no deadline

    @property
    def graceful_timeout(self) -> float: ...


W = TypeVar("W", bound=Worker)


class Supervisor(Protocol[W]):
    """What the rollout asks of the process that owns the workers (the master)."""

    def reconfigure(self) -> Settings:
        """Re-read the configuration as a reload begins; raise PrunError if it is wrong."""
        ...

    def spawn(self, slot: int, generation: int) -> W:
        """Start a worker for `slot` of `generation` (not yet the slot's own); raise OSError if it cannot."""
        ...

    def drain(self, worker: W, timeout: float) -> None:
        """Ask a worker to finish what it serves within `timeout` and exit (one not yet ready is killed)."""
        ...

    def kill(self, worker: W) -> None:
        """SIGKILL a worker."""
        ...


@dataclass(eq=False)
class Slot(Generic[W]):
    """A place for one worker; its worker is replaced on restart, reload, recycle."""

    index: int
    generation: int
    worker: W | None = None
    # The supervisor's record (cluster/supervision.py): restarts, consecutive early deaths, the pending restart.
    restarts: int = 0
    failures: int = 0
    unstable: int = 0  # restarts in a row of workers that lived less than --min-uptime
    last_error: str = ""
    restart_timer: asyncio.TimerHandle | None = None
    finished: bool = False  # its worker exited under --no-autorestart: empty until a reload or a scale fills it

    def take(self, worker: W, generation: int) -> W | None:
        """A rolled-out worker becomes the slot's own (with a fresh record); the worker it replaces."""
        old, self.worker, self.generation = self.worker, worker, generation
        self.failures = self.unstable = 0
        self.last_error = ""
        self.finished = False
        self.close()
        return old

    def close(self) -> None:
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None


Outcome = str | None  # None: done; otherwise why not


@dataclass
class Reload:
    done: asyncio.Future[Outcome]  # every request merged into this reload waits on it


@dataclass
class Recycle(Generic[W]):
    worker: W
    why: str  # "served 1000 requests"


@dataclass
class Scale:
    done: asyncio.Future[Outcome]
    delta: int = 0  # +1 or -1 (TTIN, TTOU)
    to: int | None = None  # a count (the daemon's scale request), at least 1


Operation = Reload | Recycle[W] | Scale


def _settle(op: Operation[Any], outcome: Outcome) -> None:
    """Tell whoever asked for `op` how it ended (once)."""
    if isinstance(op, (Reload, Scale)) and not op.done.done():
        op.done.set_result(outcome)


def ready_now(worker: Worker) -> bool:
    return worker.ready.done() and not worker.ready.cancelled() and worker.ready.result()


def slot_list(slots: list[Slot[W]]) -> str:
    """`0-3, 6` for slots 0, 1, 2, 3 and 6."""
    parts: list[str] = []
    indexes = sorted(slot.index for slot in slots)
    start = prev = indexes[0]
    for index in indexes[1:] + [-1]:
        if index != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = index
        prev = index
    return ", ".join(parts)


class Rollout(Generic[W]):
    """The slot table, its generations, and the queue of operations that replace workers."""

    def __init__(self, supervisor: Supervisor[W], settings: Settings, log: Log, notifier: Notifier | None = None,
                 instances: int = 1, kill_grace: float = KILL_GRACE, held: bool = False) -> None:
        self.supervisor = supervisor
        self.settings = settings  # replaced by what reconfigure returns at each reload
        self.log = log
        self.notifier = notifier or Notifier(None)
        self.kill_grace = kill_grace
        self.loop = asyncio.get_running_loop()
        self.slots: list[Slot[W]] = [Slot(i, 1) for i in range(instances)]
        self.generation = 1  # the generation that serves
        self.newest = 1  # the last one started, served or not: a failed generation's number is not reused
        self.queue: deque[Operation[W]] = deque()
        self.running: Operation[W] | None = None
        self.candidates: list[W] = []  # started by the running operation, no slot's own yet
        self.stopped = False
        self.held = held  # operations wait in the queue until release() (the first generation boots)
        self._task: asyncio.Task[None] | None = None
        self._drain_deadlines: dict[W, asyncio.TimerHandle] = {}
        self.on_reloaded: Callable[[bool, float], None] | None = None  # (ok, seconds): for the metrics
        self.emit: Callable[[Any], None] = lambda event: None  # cluster/control.py events, under the daemon

    # ---- requests (from the master's signal handlers and channels) --------------------------------

    @property
    def reloading(self) -> bool:
        return isinstance(self.running, Reload)

    @property
    def serving(self) -> int:
        """The slots that have (or are getting) a worker: all but those --no-autorestart left empty."""
        return sum(not slot.finished for slot in self.slots)

    def request_reload(self) -> asyncio.Future[Outcome]:
        """Queue a reload (or join the one already queued); the future says how it ended."""
        queued = next((op for op in self.queue if isinstance(op, Reload)), None)
        if queued is not None:
            self.log.info("reload already queued")
            return queued.done
        op = Reload(self.loop.create_future())
        self._enqueue(op)
        return op.done

    def request_recycle(self, worker: W, why: str) -> None:
        self._enqueue(Recycle(worker, why))

    def request_scale(self, delta: int = 0, to: int | None = None) -> asyncio.Future[Outcome]:
        """One worker more or fewer (`delta`), or `to` workers; the future says how it ended."""
        op = Scale(self.loop.create_future(), delta, to)
        self._enqueue(op)
        return op.done

    def release(self) -> None:
        """Run the operations asked while held (the first generation is ready now)."""
        self.held = False
        self._kick()

    def stop(self) -> None:
        """The master stops: drop the queue, end the running operation; its candidates go at once."""
        self.stopped = True
        for op in self.queue:
            _settle(op, STOPPING)
        self.queue.clear()
        self._abandon(self.candidates)
        if self._task is not None:
            self._task.cancel()

    async def idle(self) -> None:
        """Wait until no operation runs or waits."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    # ---- workers under deadlines ----------------------------------------------------------------

    def slot_of(self, worker: W) -> Slot[W] | None:
        for slot in self.slots:
            if slot.worker is worker:
                return slot
        return None

    def fill(self, slot: Slot[W]) -> W:
        """Give a slot without a live worker its own at once (first start, restart): not queued."""
        slot.worker = self._start(slot.index, slot.generation)
        return slot.worker

    def retire(self, worker: W) -> None:
        """Drain a worker; SIGKILL it if it is still there --graceful-timeout plus a grace later."""
        if worker.exited.done() or worker in self._drain_deadlines:
            return
        timeout = self.settings.graceful_timeout
        self.supervisor.drain(worker, timeout)
        self._drain_deadlines[worker] = self.loop.call_later(timeout + self.kill_grace, self._overstayed,
                                                             worker, timeout)
        worker.exited.add_done_callback(lambda _: self._drain_deadlines.pop(worker).cancel())

    def _overstayed(self, worker: W, timeout: float) -> None:
        if not worker.exited.done():
            self.log.warning(f"{worker.describe()} did not finish draining within {timeout:g}s: killing it")
            self.supervisor.kill(worker)

    def _start(self, slot: int, generation: int) -> W:
        """Spawn a worker under the ready deadline: one not ready by --ready-timeout is killed."""
        worker = self.supervisor.spawn(slot, generation)
        timeout = self.settings.ready_timeout
        if timeout:
            timer = self.loop.call_later(timeout, self._late, worker, timeout)
            worker.ready.add_done_callback(lambda _: timer.cancel())
        return worker

    def _late(self, worker: W, timeout: float) -> None:
        if not worker.ready.done():
            worker.boot_error = worker.boot_error or f"not ready after {timeout:g}s"
            self.supervisor.kill(worker)

    def _abandon(self, candidates: list[W]) -> None:
        """Candidates that will not take a slot: a ready one may already serve (drain it); kill the rest."""
        for candidate in candidates:
            if ready_now(candidate):
                self.retire(candidate)
            elif not candidate.exited.done():
                self.supervisor.kill(candidate)
        candidates.clear()

    # ---- the operations ---------------------------------------------------------------------------

    def _enqueue(self, op: Operation[W]) -> None:
        if self.stopped:
            _settle(op, STOPPING)
            return
        self.queue.append(op)
        self._kick()

    def _kick(self) -> None:
        if self.queue and not self.held and (self._task is None or self._task.done()):
            self._task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        while self.queue and not self.stopped:
            self.running = op = self.queue.popleft()
            outcome: Outcome = STOPPING
            try:
                if isinstance(op, Reload):
                    outcome = await self._reload()
                elif isinstance(op, Recycle):
                    await self._recycle(op.worker, op.why)
                else:
                    outcome = await self._scale(op.delta, op.to)
            except Exception as exc:  # a bug must not end every later operation too
                outcome = f"{type(op).__name__.lower()} failed: {exc!r}"
                self.log.error(outcome, traceback=traceback.format_exc())
            finally:
                self.running = None
                self._abandon(self.candidates)
                _settle(op, outcome)

    async def _roll(self, slots: list[Slot[W]], generation: int) -> str | None:
        """Give `slots` new workers of `generation`; None on success, else why not (the slots unchanged)."""
        reason = None
        for slot in slots:
            try:
                self.candidates.append(self._start(slot.index, generation))
            except OSError as exc:
                reason = f"cannot start worker {slot.index}: {exc.strerror or exc}"
                break
        if reason is None:
            reason = await self._until_ready(self.candidates)
        if reason is not None:
            self._abandon(self.candidates)
            return reason
        for slot, candidate in zip(slots, self.candidates):
            old = slot.take(candidate, generation)
            if old is not None:
                self.retire(old)
        self.candidates.clear()
        return None

    async def _until_ready(self, candidates: list[W]) -> str | None:
        """None once every candidate is READY and still there; else why one is not."""
        while True:
            for candidate in candidates:
                if candidate.exited.done() and ready_now(candidate):
                    code = candidate.exited.result() if not candidate.exited.cancelled() else 0
                    return f"{candidate.describe()}: it {describe_exit(code)} right after it was ready"
                if candidate.ready.done() and not ready_now(candidate):
                    return f"{candidate.describe()}: {candidate.why_not_ready()}"
            waiting = [f for c in candidates for f in (c.ready, c.exited) if not f.done()]
            if all(ready_now(c) for c in candidates):
                return None
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)

    async def _reload(self) -> Outcome:
        began = time.monotonic()
        self.notifier.reloading(f"reloading {plural(len(self.slots), 'worker')}")
        self.emit(control.ReloadStarted(self.newest + 1))
        try:
            self.settings = self.supervisor.reconfigure()
        except PrunError as exc:
            reason: Outcome = f"{exc}; {self._kept([], self.slots, 0)}"
        else:
            reason = await self._roll_all(began)
        if reason:
            self.log.error(f"reload failed: {reason}")
        if self.on_reloaded is not None:
            self.on_reloaded(not reason, time.monotonic() - began)
        self.notifier.ready(f"{plural(len(self.slots), 'worker')} ready, gen {self.generation}"
                            + ("" if not reason else " (the last reload failed)"))
        self.emit(control.ReloadFinished(not reason, self.generation, self.serving, reason or ""))
        return reason

    async def _roll_all(self, began: float) -> Outcome:
        self.newest += 1
        generation = self.newest
        slots = list(self.slots)  # scaling waits in the queue: the table does not change meanwhile
        old = [slot.worker for slot in slots if slot.worker is not None]
        self.log.info(f"reloading: gen {self.generation} -> gen {generation}, {plural(len(slots), 'worker')}")
        batch = max(1, self.settings.reload_batch)
        for start in range(0, len(slots), batch):
            reason = await self._roll(slots[start:start + batch], generation)
            if reason:
                return f"{reason}; {self._kept(slots[:start], slots[start:], generation)}"
        self.generation = generation
        if old:
            await asyncio.wait([w.exited for w in old])
        self.log.info(f"reload complete: {plural(len(slots), 'worker')} on gen {generation} in "
                      f"{time.monotonic() - began:.2f}s")
        return None

    def _kept(self, rolled: list[Slot[W]], rest: list[Slot[W]], generation: int) -> str:
        """Which slots run which generation once a reload stopped (`rolled` ones on `generation`)."""
        groups: dict[int, list[Slot[W]]] = {}
        for slot in rest:
            groups.setdefault(slot.generation, []).append(slot)
        if len(groups) == 1:
            kept = f"gen {rest[0].generation}"
        else:  # an earlier reload failed half-way too
            kept = "(" + "; ".join(f"slots {slot_list(group)}: gen {g}" for g, group in groups.items()) + ")"
        if not rolled:
            return f"every worker keeps serving {kept if len(groups) == 1 else 'its generation ' + kept}"
        return (f"{plural(len(rolled), 'worker')} (slots {slot_list(rolled)}) already run gen {generation}, the other "
                f"{len(rest)} (slots {slot_list(rest)}) keep {kept if len(groups) == 1 else 'their generations ' + kept}")

    async def _recycle(self, worker: W, why: str) -> None:
        slot = self.slot_of(worker)
        if slot is None or not ready_now(worker):
            return  # replaced meanwhile (by a reload, or after it died)
        self.log.info(f"{worker.describe()} {why}: replacing it")
        reason = await self._roll([slot], slot.generation)
        if reason:
            self.log.error(f"recycling {worker.describe()} failed: {reason}; it keeps serving")

    async def _scale(self, delta: int, to: int | None) -> Outcome:
        """One slot at a time, up or down to the count asked; never below one. Slots --no-autorestart left
        empty count as workers to have: the scale fills those it keeps."""
        wanted = to if to is not None else self.serving + delta
        if wanted < 1:
            self.log.info("already at 1 worker; not scaling down")
            wanted = 1
        while len(self.slots) > wanted and not self.stopped:
            slot = self.slots.pop()
            slot.close()
            if slot.worker is not None:
                self.retire(slot.worker)
            self.log.info(f"scaled down to {plural(len(self.slots), 'worker')}")
            self.emit(control.Scaled(self.serving))
        for slot in [slot for slot in self.slots if slot.finished and not self.stopped]:
            reason = await self._roll([slot], self.generation)
            if reason:
                return self._scale_failed(reason)
            self.log.info(f"worker {slot.index} is back: {plural(self.serving, 'worker')}")
            self.emit(control.Scaled(self.serving))
        while len(self.slots) < wanted and not self.stopped:
            slot = Slot(len(self.slots), self.generation)
            reason = await self._roll([slot], slot.generation)
            if reason:
                return self._scale_failed(reason)
            self.slots.append(slot)
            self.log.info(f"scaled up to {plural(len(self.slots), 'worker')}")
            self.emit(control.Scaled(self.serving))
        return STOPPING if self.stopped else None

    def _scale_failed(self, reason: str) -> str:
        reason = (f"scaling up failed: {reason}; {plural(self.serving, 'worker')} "
                  f"keep{'s' if self.serving == 1 else ''} serving")
        self.log.error(reason)
        self.emit(control.Problem(reason))
        return reason
