"""The rollout's edges, one test each, against an in-memory supervisor (no processes; milliseconds each).

The end-to-end behaviour with real processes is in test_reload.py and test_master.py.
"""

from __future__ import annotations

import asyncio
import functools
import io
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from prun.cluster.errors import PrunError
from prun.cluster.log import Log
from prun.cluster.rollout import Rollout


@dataclass
class Settings:
    reload_batch: int = 1
    ready_timeout: float = 5.0
    graceful_timeout: float = 5.0


@dataclass(eq=False)
class FakeWorker:
    slot: int
    generation: int
    pid: int
    ready: asyncio.Future[bool]
    exited: asyncio.Future[int]
    boot_error: str = ""
    state: str = "booting"  # booting, ready, draining, exited

    def describe(self) -> str:
        return f"worker {self.slot} (pid {self.pid}, gen {self.generation})"

    def why_not_ready(self) -> str:
        return self.boot_error or "it did not become ready"

    def become_ready(self) -> None:
        if self.state == "booting":
            self.state = "ready"
            self.ready.set_result(True)

    def exit(self, code: int = 0) -> None:
        if self.state != "exited":
            self.state = "exited"
            if not self.ready.done():
                self.ready.set_result(False)
            self.exited.set_result(code)


@dataclass
class FakeSupervisor:
    """Workers in memory. `boot` decides what a new worker does; a drained worker exits unless `stuck`."""

    settings: Settings = field(default_factory=Settings)
    boot: Callable[[FakeWorker], None] = FakeWorker.become_ready
    stuck: set[int] = field(default_factory=set)  # pids that ignore a drain
    config_error: str = ""
    spawned: list[FakeWorker] = field(default_factory=list)
    events: list[tuple[str, FakeWorker]] = field(default_factory=list)

    def reconfigure(self) -> Settings:
        if self.config_error:
            raise PrunError(self.config_error)
        return self.settings

    def spawn(self, slot: int, generation: int) -> FakeWorker:
        loop = asyncio.get_running_loop()
        worker = FakeWorker(slot, generation, 1000 + len(self.spawned), loop.create_future(), loop.create_future())
        self.spawned.append(worker)
        self.events.append(("spawn", worker))
        worker.ready.add_done_callback(lambda f: self.events.extend([("ready", worker)] if f.result() else []))
        loop.call_soon(self.boot, worker)
        return worker

    def drain(self, worker: FakeWorker, timeout: float) -> None:
        if worker.state != "ready":
            self.kill(worker)
            return
        worker.state = "draining"
        self.events.append(("drain", worker))
        if worker.pid not in self.stuck:
            asyncio.get_running_loop().call_soon(worker.exit, 0)

    def kill(self, worker: FakeWorker) -> None:
        self.events.append(("kill", worker))
        asyncio.get_running_loop().call_soon(worker.exit, -9)

    def of(self, generation: int) -> list[FakeWorker]:
        return [w for w in self.spawned if w.generation == generation]

    def did(self, what: str) -> list[FakeWorker]:
        return [w for event, w in self.events if event == what]


def fails(slot: int, generation: int, error: str = "ImportError: a half-deployed release") -> Callable[[FakeWorker], None]:
    """A boot where the given slot's worker of `generation` exits before it is ready; every other is ready."""
    def boot(worker: FakeWorker) -> None:
        if (worker.slot, worker.generation) == (slot, generation):
            worker.boot_error = error
            worker.exit(3)
        else:
            worker.become_ready()
    return boot


def hangs(generation: int) -> Callable[[FakeWorker], None]:
    def boot(worker: FakeWorker) -> None:
        if worker.generation != generation:
            worker.become_ready()
    return boot


class Harness:
    def __init__(self, sup: FakeSupervisor, instances: int, kill_grace: float = 0.0) -> None:
        self.stream = io.StringIO()
        self.sup = sup
        self.rollout: Rollout[FakeWorker] = Rollout(sup, sup.settings, Log(stream=self.stream), instances=instances,
                                                    kill_grace=kill_grace)

    async def start(self) -> list[FakeWorker]:
        """The first generation, as the master starts it."""
        first = [self.rollout.fill(slot) for slot in self.rollout.slots]
        await asyncio.wait([w.ready for w in first])
        return first

    async def reload_until_first_candidate(self) -> FakeWorker:
        """Begin a reload whose first new worker boots until the test makes it ready."""
        self.sup.boot = hangs(generation=2)
        self.rollout.request_reload()
        await until(lambda: self.sup.of(2), "the reload's first candidate")
        return self.sup.of(2)[0]

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def line(self, pattern: str) -> str:
        found = [line for line in self.lines if re.search(pattern, line)]
        assert len(found) == 1, f"{pattern!r}: {found} in {self.lines}"
        return found[0]

    def serving(self) -> list[tuple[int, int]]:
        """(slot, generation) of each slot's worker."""
        return [(s.index, s.worker.generation) for s in self.rollout.slots if s.worker]


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh loop, failing fast if it hangs."""
    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 2.0))
    return sync


async def until(predicate: Callable[[], object], what: str = "condition") -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


async def settle(aw: Awaitable[None]) -> None:
    await aw
    await asyncio.sleep(0)  # let exits scheduled by the last step run


@run
async def test_new_workers_ready_take_their_slots_batch_by_batch_and_the_old_ones_drain() -> None:
    h = Harness(FakeSupervisor(), instances=3)
    old = await h.start()
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    assert h.serving() == [(0, 2), (1, 2), (2, 2)]
    assert h.sup.did("drain") == old and all(w.state == "exited" for w in old)
    timeline = [(event, w.slot, w.generation) for event, w in h.sup.events[6:]]
    assert timeline == [("spawn", 0, 2), ("ready", 0, 2), ("drain", 0, 1),
                        ("spawn", 1, 2), ("ready", 1, 2), ("drain", 1, 1),
                        ("spawn", 2, 2), ("ready", 2, 2), ("drain", 2, 1)]
    h.line(r"^prun: reloading: gen 1 -> gen 2, 3 workers$")
    h.line(r"^prun: reload complete: 3 workers on gen 2 in \d+\.\d\ds$")
    assert h.rollout.generation == 2 and not h.rollout.reloading


@run
async def test_a_new_worker_that_exits_before_ready_fails_the_reload_and_leaves_the_old_ones_serving() -> None:
    h = Harness(FakeSupervisor(), instances=2)
    old = await h.start()
    h.sup.boot = fails(slot=0, generation=2)
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    (failed,) = h.sup.of(2)
    h.line(rf"reload failed: worker 0 \(pid {failed.pid}, gen 2\): ImportError: a half-deployed release; "
           r"every worker keeps serving gen 1$")
    assert [s.worker for s in h.rollout.slots] == old and all(w.state == "ready" for w in old)
    assert not h.sup.did("drain") and not h.sup.did("kill")
    assert h.rollout.generation == 1
    h.sup.boot = FakeWorker.become_ready
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    h.line(r"reload complete: 2 workers on gen 3")  # a failed generation's number is not reused


@run
async def test_a_new_worker_not_ready_by_the_ready_timeout_is_killed_and_the_reload_fails() -> None:
    sup = FakeSupervisor(Settings(ready_timeout=0.05))
    h = Harness(sup, instances=2)
    old = await h.start()
    sup.boot = hangs(generation=2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    (late,) = sup.of(2)
    assert sup.did("kill") == [late] and late.state == "exited"
    assert loop.time() - began >= 0.05
    h.line(rf"reload failed: worker 0 \(pid {late.pid}, gen 2\): not ready after 0.05s; every worker keeps serving gen 1")
    assert [s.worker for s in h.rollout.slots] == old and all(w.state == "ready" for w in old)


@run
async def test_hups_during_a_reload_are_queued_and_merged_into_one_more_reload() -> None:
    sup = FakeSupervisor()
    h = Harness(sup, instances=2)
    await h.start()
    await h.reload_until_first_candidate()
    h.rollout.request_reload()
    h.rollout.request_reload()
    assert h.lines.count("prun: reload already queued") == 1
    sup.boot = FakeWorker.become_ready
    sup.of(2)[0].become_ready()
    await settle(h.rollout.idle())
    starts = [i for i, line in enumerate(h.lines) if "reloading:" in line]
    ends = [i for i, line in enumerate(h.lines) if "reload complete" in line]
    assert len(starts) == 2 and len(ends) == 2 and ends[0] < starts[1]
    assert h.serving() == [(0, 3), (1, 3)] and not sup.of(4)


@run
async def test_term_during_a_reload_drains_or_kills_its_candidates_and_drops_the_queue() -> None:
    sup = FakeSupervisor(Settings(reload_batch=2))
    h = Harness(sup, instances=4)
    old = await h.start()
    sup.boot = lambda w: w.become_ready() if (w.slot, w.generation) != (1, 2) else None
    h.rollout.request_reload()
    await until(lambda: len(sup.of(2)) == 2 and sup.of(2)[0].state == "ready", "one candidate ready")
    h.rollout.request_reload()  # queued behind
    h.rollout.stop()
    ready, booting = sup.of(2)
    assert sup.did("drain") == [ready] and sup.did("kill") == [booting]
    await settle(h.rollout.idle())
    assert all(w.state == "exited" for w in sup.of(2)) and len(sup.spawned) == 6  # nothing left, nothing more
    assert [s.worker for s in h.rollout.slots] == old  # the master drains these itself
    assert not any("reload complete" in line or "reload failed" in line for line in h.lines)
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    assert len(sup.spawned) == 6  # a stopped rollout starts nothing


@run
async def test_a_later_batch_failing_keeps_the_earlier_batches_on_the_new_generation_and_says_which() -> None:
    sup = FakeSupervisor(Settings(reload_batch=2))
    h = Harness(sup, instances=4)
    await h.start()
    sup.boot = fails(slot=2, generation=2)
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    failed = next(w for w in sup.of(2) if w.slot == 2)
    h.line(rf"reload failed: worker 2 \(pid {failed.pid}, gen 2\): ImportError: a half-deployed release; "
           r"2 workers \(slots 0-1\) already run gen 2, the other 2 \(slots 2-3\) keep gen 1$")
    assert h.serving() == [(0, 2), (1, 2), (2, 1), (3, 1)]
    assert all(w.state == "exited" for w in sup.of(2) if w.slot >= 2)  # the failed batch's other candidate too
    assert h.rollout.generation == 1
    sup.boot = fails(slot=0, generation=3)
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    h.line(r"reload failed: .*gen 3\): .*; every worker keeps serving its generation "
           r"\(slots 0-1: gen 2; slots 2-3: gen 1\)$")


@run
async def test_an_old_worker_that_does_not_drain_within_the_graceful_timeout_is_killed() -> None:
    sup = FakeSupervisor(Settings(graceful_timeout=0.02))
    h = Harness(sup, instances=1, kill_grace=0.01)
    (old,) = await h.start()
    sup.stuck.add(old.pid)
    loop = asyncio.get_running_loop()
    began = loop.time()
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    assert sup.did("drain") == [old] and sup.did("kill") == [old] and old.state == "exited"
    assert loop.time() - began >= 0.03
    warning = h.line(r"did not finish draining")
    assert warning == f"prun: warning: worker 0 (pid {old.pid}, gen 1) did not finish draining within 0.02s: killing it"
    h.line(r"reload complete: 1 worker on gen 2")


@pytest.mark.parametrize("delta, slots", [(+1, 3), (-1, 1)])
@run
async def test_scaling_during_a_reload_waits_for_it_then_applies_to_the_new_generation(delta: int, slots: int) -> None:
    sup = FakeSupervisor()
    h = Harness(sup, instances=2)
    await h.start()
    await h.reload_until_first_candidate()
    h.rollout.request_scale(delta)
    sup.boot = FakeWorker.become_ready
    sup.of(2)[0].become_ready()
    await settle(h.rollout.idle())
    assert h.serving() == [(i, 2) for i in range(slots)]
    h.line(r"reload complete: 2 workers on gen 2")  # the reload rolled the slots it began with
    scaled = h.line(rf"scaled (up|down) to {slots} workers?$")
    assert h.lines.index(scaled) > h.lines.index(h.line("reload complete"))
    assert all(w.state == "exited" for w in sup.spawned if w.generation == 1)
    if delta < 0:
        assert sup.did("drain")[-1].generation == 2  # the removed slot's new worker drained


@run
async def test_a_recycle_during_a_reload_waits_and_is_dropped_if_the_reload_replaced_that_worker() -> None:
    sup = FakeSupervisor()
    h = Harness(sup, instances=2)
    old = await h.start()
    await h.reload_until_first_candidate()
    h.rollout.request_recycle(old[1], "served 10 requests")  # the reload is about to replace it anyway
    first_new = sup.of(2)[0]
    first_new.become_ready()
    await until(lambda: h.rollout.slots[0].worker is first_new and len(sup.of(2)) == 2, "slot 0 rolled")
    h.rollout.request_recycle(first_new, "served 10 requests")  # a new worker at its limit already
    sup.boot = FakeWorker.become_ready
    sup.of(2)[1].become_ready()
    await settle(h.rollout.idle())
    assert not any(f"pid {old[1].pid}" in line and "replacing" in line for line in h.lines)
    h.line(rf"worker 0 \(pid {first_new.pid}, gen 2\) served 10 requests: replacing it")
    assert len(sup.of(2)) == 3 and h.serving() == [(0, 2), (1, 2)]
    assert h.rollout.slots[0].worker is sup.of(2)[2] and first_new.state == "exited"
    assert h.lines.index(h.line("reload complete")) < h.lines.index(h.line("replacing it"))


@run
async def test_a_recycle_whose_replacement_cannot_boot_keeps_the_worker_serving() -> None:
    sup = FakeSupervisor()
    h = Harness(sup, instances=1)
    (worker,) = await h.start()
    sup.boot = fails(slot=0, generation=1, error="MemoryError")
    h.rollout.request_recycle(worker, "served 5 requests")
    await settle(h.rollout.idle())
    h.line(rf"recycling worker 0 \(pid {worker.pid}, gen 1\) failed: worker 0 \(pid \d+, gen 1\): MemoryError; "
           "it keeps serving")
    assert h.rollout.slots[0].worker is worker and worker.state == "ready"


@run
async def test_a_scale_up_whose_worker_cannot_boot_adds_no_slot() -> None:
    sup = FakeSupervisor()
    h = Harness(sup, instances=1)
    await h.start()
    sup.boot = fails(slot=1, generation=1)
    h.rollout.request_scale(+1)
    await settle(h.rollout.idle())
    h.line(r"scaling up failed: worker 1 .*: ImportError: a half-deployed release; 1 worker keeps serving")
    assert len(h.rollout.slots) == 1
    h.rollout.request_scale(-1)
    await settle(h.rollout.idle())
    h.line("already at 1 worker; not scaling down")


@run
async def test_a_config_that_no_longer_parses_fails_the_reload_before_any_worker_starts() -> None:
    sup = FakeSupervisor(config_error="unknown setting 'bogus' in prun.toml")
    h = Harness(sup, instances=2)
    await h.start()
    h.rollout.request_reload()
    await settle(h.rollout.idle())
    h.line(r"reload failed: unknown setting 'bogus' in prun.toml; every worker keeps serving gen 1$")
    assert len(sup.spawned) == 2 and h.rollout.newest == 1


@run
async def test_a_new_worker_that_dies_after_ready_while_its_batch_boots_fails_the_batch() -> None:
    sup = FakeSupervisor(Settings(reload_batch=2))
    h = Harness(sup, instances=2)
    old = await h.start()
    sup.boot = lambda w: w.become_ready() if w.slot == 0 else None  # slot 1's candidate is slow
    h.rollout.request_reload()
    await until(lambda: len(sup.of(2)) == 2 and sup.of(2)[0].state == "ready", "slot 0's candidate ready")
    early, slow = sup.of(2)
    early.exit(-11)  # crashes while its batch still boots: it must not take slot 0 as a dead worker
    slow.become_ready()
    await settle(h.rollout.idle())
    h.line(rf"reload failed: worker 0 \(pid {early.pid}, gen 2\): it was killed by SIGSEGV right after it was ready; "
           r"every worker keeps serving gen 1$")
    assert [s.worker for s in h.rollout.slots] == old and sup.did("drain") == [slow]


@run
async def test_operations_asked_while_the_first_generation_boots_wait_until_it_is_ready() -> None:
    sup = FakeSupervisor()
    stream = io.StringIO()
    rollout: Rollout[FakeWorker] = Rollout(sup, sup.settings, Log(stream=stream), instances=2, held=True)
    first = [rollout.fill(slot) for slot in rollout.slots]
    rollout.request_scale(-1)
    rollout.request_reload()
    await asyncio.sleep(0.01)
    assert len(sup.spawned) == 2 and not sup.did("drain") and not sup.did("kill")  # nothing touched
    await asyncio.wait([w.ready for w in first])
    rollout.release()
    await settle(rollout.idle())
    assert stream.getvalue().splitlines()[0] == "prun: scaled down to 1 worker"
    assert [(s.index, s.worker.generation) for s in rollout.slots if s.worker] == [(0, 2)]
