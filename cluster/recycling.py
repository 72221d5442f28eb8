"""Automatic recycling, all through the rollout's lossless path: memory, code changes, a schedule.

- `--max-memory-restart SIZE`: on each heartbeat, a ready worker whose resident memory is over SIZE is
  replaced like a --max-requests recycle: a new worker for its slot first, then it drains. One worker at a
  time (the rollout's queue), each once.
- `--watch[=PATHS]` (`--ignore-watch GLOBS`): a change under PATHS (watchfiles, the `prun-cluster[watch]` extra)
  asks for a rolling reload; changes are debounced, and a reload asked while one runs or waits is not
  queued twice (the rollout's rule), so reloads never overlap.
- `--cron-restart "0 3 * * *"`: a rolling reload at each time the expression matches (cluster/cron.py).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prun.cluster import control
from prun.cluster.log import Log
from prun.cluster.metrics import Tally, rss
from prun.runtime import install_hint

if TYPE_CHECKING:
    from prun.cluster.config import Config
    from prun.cluster.rollout import Rollout
    from prun.cluster.worker import WorkerProcess

WATCH_DEBOUNCE_MS = 500
IGNORED = ("*.pyc", "*~", ".*.swp", "*/__pycache__/*", "*/.git/*")


def megabytes(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"


class Recycler:
    """Asks the rollout to replace workers or reload, for the three reasons above."""

    def __init__(self, config: Callable[[], Config], rollout: Rollout[WorkerProcess], log: Log,
                 tally: Tally, emit: Callable[[Any], None] = lambda event: None) -> None:
        self.config = config
        self.emit = emit  # the daemon's control channel, if any
        self.rollout = rollout
        self.log = log
        self.tally = tally
        self.over: set[int] = set()  # pids already asked for
        self.tasks: list[asyncio.Task[None]] = []

    # ---- memory --------------------------------------------------------------------------------

    def heartbeat(self, worker: WorkerProcess, reported: int) -> None:
        limit = self.config().max_memory_restart
        if not limit or worker.pid in self.over or not worker.ready.done() or worker.state.value != "ready":
            return
        used = reported or rss(worker.pid)
        if used > limit:
            serving = {slot.worker.pid for slot in self.rollout.slots if slot.worker is not None}
            self.over = (self.over & serving) | {worker.pid}  # forget the ones already replaced
            self.tally.restarted(worker.slot, "memory")
            self.emit(control.MemoryLimit(worker.slot, worker.pid, used, limit))
            self.rollout.request_recycle(
                worker, f"uses {megabytes(used)} of memory, over --max-memory-restart ({used} > {limit} bytes)")

    # ---- watch and cron --------------------------------------------------------------------------

    def start(self) -> None:
        config = self.config()
        loop = asyncio.get_running_loop()
        if config.watch:
            self.tasks.append(loop.create_task(self.watch(config.watch, config.ignore_watch, config.chdir)))
        if config.cron_restart:
            self.tasks.append(loop.create_task(self.cron(config.cron_restart)))

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def watch(self, paths: str, ignore: str, chdir: str) -> None:
        try:
            import watchfiles
        except ImportError:
            self.log.error(f"--watch needs watchfiles: {install_hint('watch')}; not watching")
            return
        roots = [os.path.abspath(os.path.join(chdir, p.strip())) for p in paths.split(",") if p.strip()]
        patterns = IGNORED + tuple(p.strip() for p in ignore.split(",") if p.strip())

        def wanted(change: Any, path: str) -> bool:
            rel = [os.path.relpath(path, root) for root in roots if path.startswith(root)]
            return not any(fnmatch.fnmatch(path, p) or any(fnmatch.fnmatch(r, p) for r in rel) for p in patterns)

        self.log.info(f"watching {', '.join(roots)} for changes")
        async for changes in watchfiles.awatch(*roots, watch_filter=wanted, debounce=WATCH_DEBOUNCE_MS,
                                               step=50, recursive=True):
            names = sorted({os.path.relpath(path, roots[0]) for _, path in changes})
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            self.log.info(f"changed: {shown}; reloading")
            self.rollout.request_reload()

    async def cron(self, expression: str, now: Callable[[], float] = time.time) -> None:
        from prun.cluster.cron import Schedule

        schedule = Schedule.parse(expression)
        while True:
            at = schedule.next_after(now())
            await asyncio.sleep(max(0.0, at - now()))
            self.log.info(f"--cron-restart {expression!r}: reloading")
            self.rollout.request_reload()

