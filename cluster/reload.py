"""Rolling replacement of workers: readiness-gated, batch by batch, aborted without harm.

    for each batch of slots (--reload-batch):
        spawn the new generation's workers for the batch
        wait until each is READY, or exits, or --ready-timeout passes (the master's watchdog)
        any not ready -> kill the batch's new workers, stop, every old worker keeps serving
        all ready     -> they take the slots; the old workers drain

An old worker is never killed because a new one failed. Recycling a worker (max-requests) is the
same step for one slot.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from prun.cluster.errors import PrunError
from prun.cluster.worker import WorkerProcess, describe_exit

if TYPE_CHECKING:
    from prun.cluster.master import Master, Slot


def failure_reason(worker: WorkerProcess) -> str:
    """Why a worker did not become ready, in a user's words."""
    if worker.boot_error:
        return worker.boot_error
    if worker.exit_status is not None:
        return f"it {describe_exit(worker.exit_status)} before it was ready"
    return "it did not become ready"


async def roll_slots(master: Master, slots: list[Slot], generation: int) -> str | None:
    """Give `slots` new workers of `generation`; None on success, else why it failed (nothing changed)."""
    candidates = [master.spawn(slot.index, generation) for slot in slots]
    try:
        results = await asyncio.gather(*(c.ready for c in candidates if c.ready))
    except asyncio.CancelledError:  # the master is stopping: a ready candidate may already serve
        for candidate in candidates:
            master.drain(candidate)
        raise
    if not all(results):
        failed = next(c for c, ok in zip(candidates, results) if not ok)
        for candidate in candidates:
            master.drain(candidate)  # a ready one may already serve: drain it; the others are killed
        return f"{failed.describe()}: {failure_reason(failed)}"
    for slot, candidate in zip(slots, candidates):
        old, slot.worker, slot.generation = slot.worker, candidate, generation
        slot.failures = 0
        slot.last_error = ""
        if slot.restart_timer:
            slot.restart_timer.cancel()
            slot.restart_timer = None
        if old is not None:
            master.drain(old)
    return None


async def rolling_reload(master: Master) -> bool:
    """Replace every worker by one of a new generation; the service is unchanged if that fails."""
    began = time.monotonic()
    if master.reconfigure is not None:
        try:
            config = master.reconfigure()
        except PrunError as exc:
            master.log.error(f"reload failed: {exc}; every worker keeps serving gen {master.generation}")
            return False
        config.instances = len(master.slots)  # scaling is TTIN/TTOU's business, not a reload's
        master.config = config
    master.newest_generation += 1  # a failed generation's number is not reused: logs stay unambiguous
    generation = master.newest_generation
    old_workers = [slot.worker for slot in master.slots if slot.worker is not None]
    master.log.info(f"reloading: gen {master.generation} -> gen {generation}, {len(master.slots)} workers")
    batch = master.config.reload_batch
    slots = list(master.slots)
    for start in range(0, len(slots), batch):
        reason = await roll_slots(master, slots[start:start + batch], generation)
        if reason:
            rolled = start
            kept = f"every worker keeps serving gen {master.generation}" if rolled == 0 else (
                f"{rolled} workers already run gen {generation}, the other {len(slots) - rolled} keep gen "
                f"{master.generation}")
            master.log.error(f"reload failed: {reason}; {kept}")
            return False
    master.generation = generation
    await asyncio.gather(*(w.exited for w in old_workers if w.exited), return_exceptions=True)
    master.log.info(f"reload complete: {len(slots)} workers on gen {generation} in {time.monotonic() - began:.2f}s")
    return True
