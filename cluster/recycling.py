"""Automatic recycling, all through the rollout's lossless path: memory, code changes, a schedule.

- `--max-memory-restart SIZE`: on each heartbeat, a ready worker whose resident memory is over SIZE is
  replaced like a --max-requests recycle: a new worker for its slot first, then it drains. One worker at a
  time (the rollout's queue), each once.
- `--watch[=PATHS]` (`--ignore-watch GLOBS`): a change under PATHS (watchfiles, the `prun-cluster[watch]` extra)
  asks for a rolling reload; changes are debounced, and a reload asked while one runs or waits is not
  queued twice (the rollout's rule), so reloads never overlap.
- `--cron-restart "0 3 * * *"`: a rolling reload at each time the expression matches (cluster/cron.py).

The last two ask a fork-mode supervisor (cluster/daemon/forkmode.py) to restart its instances one by one
in the same way (`start_reloads`).
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
        self.tasks = start_reloads(config, self.log, self.rollout.request_reload)

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


def start_reloads(config: Config, log: Log, reload: Callable[[], Any]) -> list[asyncio.Task[None]]:
    """The tasks that call `reload` on --watch's changes and --cron-restart's schedule (a master's rolling
    reload, a fork-mode supervisor's restart of its instances one by one)."""
    loop = asyncio.get_running_loop()
    tasks = []
    if config.watch:
        tasks.append(loop.create_task(watch(config.watch, config.ignore_watch, config.chdir, log, reload)))
    if config.cron_restart:
        tasks.append(loop.create_task(cron(config.cron_restart, log, reload)))
    return tasks


async def watch(paths: str, ignore: str, chdir: str, log: Log, reload: Callable[[], Any]) -> None:
    try:
        import watchfiles
    except ImportError:
        log.error(f"--watch needs watchfiles: {install_hint('watch')}; not watching")
        return
    roots = [os.path.abspath(os.path.join(chdir, p.strip())) for p in paths.split(",") if p.strip()]
    patterns = IGNORED + tuple(p.strip() for p in ignore.split(",") if p.strip())

    def wanted(change: Any, path: str) -> bool:
        rel = [os.path.relpath(path, root) for root in roots if path.startswith(root)]
        return not any(fnmatch.fnmatch(path, p) or any(fnmatch.fnmatch(r, p) for r in rel) for p in patterns)

    log.info(f"watching {', '.join(roots)} for changes")
    async for changes in watchfiles.awatch(*roots, watch_filter=wanted, debounce=WATCH_DEBOUNCE_MS,
                                           step=50, recursive=True):
        names = sorted({os.path.relpath(path, roots[0]) for _, path in changes})
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        log.info(f"changed: {shown}; reloading")
        reload()


async def cron(expression: str, log: Log, reload: Callable[[], Any], now: Callable[[], float] = time.time) -> None:
    from prun.cluster.cron import Schedule

    schedule = Schedule.parse(expression)
    while True:
        at = schedule.next_after(now())
        await asyncio.sleep(max(0.0, at - now()))
        log.info(f"--cron-restart {expression!r}: reloading")
        reload()
