"""The master: owns the listeners and the worker table, supervises, and turns signals into actions.

Signal handlers only record what was asked; the loop runs `handle_<signal>`, restarts what died
(with backoff), and aborts what hangs. Rolling replacement lives in cluster/reload.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from prun.cluster import reload
from prun.cluster.balance import LeastConn
from prun.cluster.config import Config
from prun.cluster.errors import PrunError
from prun.cluster.health import HealthServer
from prun.cluster.listeners import Listener
from prun.cluster.log import Log
from prun.cluster.notify import Notifier
from prun.cluster.output import OutputRelay
from prun.cluster.worker import State, WorkerProcess, describe_exit, exit_status, spawn
from prun.runtime import channel

BACKOFF_FIRST = 0.1
BACKOFF_FACTOR = 1.5
BACKOFF_CAP = 15.0
BACKOFF_RESET_AFTER = 30.0  # a worker up this long earns its slot a fresh backoff
KILL_GRACE = 2.0  # after a drain deadline or SIGABRT, before SIGKILL
WATCHDOG_INTERVAL = 0.5


@dataclass(eq=False)
class Slot:
    """A place for one worker; its worker is replaced on restart, reload and recycle."""

    index: int
    generation: int
    worker: WorkerProcess | None = None
    restarts: int = 0
    failures: int = 0  # consecutive early deaths, for the backoff
    restart_timer: asyncio.TimerHandle | None = None
    last_error: str = ""


class Master:
    """One app's master process."""

    def __init__(
        self,
        config: Config,
        listeners: list[Listener],
        log: Log,
        reconfigure: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier(None)
        self.container = config.container or os.getpid() == 1
        self.listeners = listeners
        self.log = log
        self.reconfigure = reconfigure
        self.slots: list[Slot] = []
        self.workers: dict[int, WorkerProcess] = {}
        self.generation = 1  # the generation that serves
        self.newest_generation = 1  # the last one started, served or not
        self.stopping = False
        self.booted = False  # the first generation is ready; until then a death ends the master
        self.exit_code = 0
        self.operations = asyncio.Lock()  # reloads, recycles and scaling run one at a time
        self.reload_queued = False
        self.reloading = False
        self.started = time.monotonic()
        self.loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[int] = self.loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self.balancer = LeastConn(listeners, self.loop, log) if config.balance == "leastconn" else None
        self.health = HealthServer(config.health, self.is_ready, self.status) if config.health else None
        self.output = OutputRelay(self.loop, log) if config.log_format == "json" else None

    # ---- the main line -------------------------------------------------------------------------

    async def run(self) -> int:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
                       signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD):
            self.loop.add_signal_handler(signum, self.dispatch, signum)
        self.reap()  # anything that exited before the handler was in place
        if self.container:
            self.log.info(f"container mode{' (PID 1)' if os.getpid() == 1 else ''}: reaping every child")
        if self.health:
            self.log.info(f"health endpoint on http://{await self.health.start()}/readyz")
        if self.balancer:
            self.balancer.start()
        self.slots = [Slot(i, self.generation) for i in range(self.config.instances)]
        for slot in self.slots:
            self.start_worker(slot)
        watchdog = self.loop.call_later(WATCHDOG_INTERVAL, self.watchdog)
        try:
            if await self.first_generation_ready():
                urls = ", ".join(listener.address for listener in self.listeners)
                self.log.info(f"ready: {len(self.slots)} workers of {self.config.app} (gen 1) on {urls}")
                self.notifier.ready(f"{len(self.slots)} workers ready, gen 1")
            return await self.finished
        finally:
            watchdog.cancel()
            if self.health:
                self.health.close()

    async def first_generation_ready(self) -> bool:
        """Wait for every first worker; if any cannot boot, stop all and end with exit code 3."""
        workers = {slot.worker.ready: slot.worker for slot in self.slots if slot.worker and slot.worker.ready}
        pending = set(workers)
        failed = None
        while pending and failed is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = next((workers[fut] for fut in done if not fut.result()), None)
        self.booted = failed is None
        if failed is not None and not self.stopping:
            self.stop(graceful=False, code=exit_status(failed.exit_status or 0) or 1)
            self.log.error(f"{failed.describe()} could not boot: {reload.failure_reason(failed)}",  # the last line
                           traceback=failed.boot_traceback)
        return self.booted

    # ---- signals ---------------------------------------------------------------------------------

    def dispatch(self, signum: int) -> None:
        handler = getattr(self, "handle_" + signal.Signals(signum).name[3:].lower())
        handler()

    def handle_hup(self) -> None:
        if self.stopping:
            return
        if self.reload_queued:
            self.log.info("reload already queued")
            return
        self.reload_queued = True
        self.task(self._reload())

    def handle_term(self, signum: int = signal.SIGTERM) -> None:
        self.stop(graceful=not self.stopping, code=0 if not self.stopping else 128 + signum)

    def handle_int(self) -> None:
        self.handle_term(signal.SIGINT)

    def handle_quit(self) -> None:
        self.stop(graceful=False, code=128 + signal.SIGQUIT)

    def handle_ttin(self) -> None:
        self.task(self._scale(+1))

    def handle_ttou(self) -> None:
        self.task(self._scale(-1))

    def handle_usr1(self) -> None:
        """Reopen --log-file (after logrotate moved it) in the master and in every worker."""
        if not self.config.log_file:
            self.log.info("USR1: no --log-file to reopen")
            return
        try:
            fd = self.log.open_file(self.config.log_file)
        except PrunError as exc:
            self.log.error(str(exc))
            return
        try:
            for worker in self.workers.values():
                if worker.chan and not worker.outputs:
                    worker.chan.send(channel.LOG_FILE, fds=[fd])
        finally:
            os.close(fd)
        self.log.info(f"reopened log file {self.config.log_file}")

    def handle_chld(self) -> None:
        self.reap()

    # ---- operations ------------------------------------------------------------------------------

    def task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self) -> None:
        async with self.operations:
            self.reload_queued = False
            if self.stopping:
                return
            self.reloading = True
            self.notifier.reloading(f"reloading {len(self.slots)} workers")
            try:
                ok = await reload.rolling_reload(self)
            finally:
                self.reloading = False
            self.notifier.ready(f"{len(self.slots)} workers ready, gen {self.generation}"
                                + ("" if ok else " (the last reload failed)"))

    async def _scale(self, delta: int) -> None:
        async with self.operations:
            if self.stopping:
                return
            if delta > 0:
                slot = Slot(len(self.slots), self.generation)
                self.slots.append(slot)
                self.start_worker(slot)
                self.log.info(f"scaled up to {len(self.slots)} workers")
            elif len(self.slots) > 1:
                slot = self.slots.pop()
                if slot.restart_timer:
                    slot.restart_timer.cancel()
                if slot.worker:
                    self.drain(slot.worker)
                self.log.info(f"scaled down to {len(self.slots)} workers")
            else:
                self.log.info("already at 1 worker; not scaling down")

    async def _recycle(self, worker: WorkerProcess) -> None:
        async with self.operations:
            slot = self.slot_of(worker)
            if self.stopping or slot is None or worker.state is not State.READY:
                return
            self.log.info(f"{worker.describe()} served {worker.requests} requests: replacing it")
            reason = await reload.roll_slots(self, [slot], slot.generation)
            if reason:
                self.log.error(f"recycling {worker.describe()} failed: {reason}; it keeps serving")

    # ---- workers ---------------------------------------------------------------------------------

    def spawn(self, slot: int, generation: int) -> WorkerProcess:
        """A new worker for `slot`, registered but not yet the slot's own."""
        jitter = self.config.max_requests_jitter
        limit = self.config.max_requests + (int.from_bytes(os.urandom(2), "little") % (jitter + 1) if jitter else 0)
        options = self.config.worker_options(slot, generation, limit if self.config.max_requests else 0)
        shared = [] if self.balancer else [listener.sock for listener in self.listeners]
        worker = spawn(options, shared, self.loop, self.on_message, capture=self.output is not None)
        self.workers[worker.pid] = worker
        if self.output:
            self.output.attach(worker)
        if self.balancer:
            self.balancer.add(worker)
        return worker

    def start_worker(self, slot: Slot) -> None:
        slot.restart_timer = None
        if self.stopping or slot not in self.slots or (slot.worker and slot.worker.alive):
            return
        try:
            slot.worker = self.spawn(slot.index, slot.generation)
        except OSError as exc:
            self.log.error(f"cannot start worker {slot.index}: {exc}")
            self.schedule_restart(slot)

    def slot_of(self, worker: WorkerProcess) -> Slot | None:
        for slot in self.slots:
            if slot.worker is worker:
                return slot
        return None

    def on_message(self, worker: WorkerProcess, msg: channel.Message, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        kind = msg.get("t")
        if kind == channel.HEARTBEAT:
            worker.last_heartbeat = time.monotonic()
            worker.conns = int(msg.get("conns", 0))
            worker.requests = int(msg.get("requests", 0))
            if self.balancer:
                self.balancer.acknowledged(worker, int(msg.get("accepted", 0)))
        elif kind == channel.READY:
            worker.state = State.READY
            worker.last_heartbeat = time.monotonic()
            if worker.ready and not worker.ready.done():
                worker.ready.set_result(True)
            self.log.info(f"{worker.describe()} ready")
            if self.balancer:
                self.balancer.ready(worker)
        elif kind == channel.BOOT_ERROR:
            worker.boot_error = str(msg.get("message", "unknown error"))
            worker.boot_traceback = str(msg.get("traceback", ""))
        elif kind == channel.RECYCLE and self.config.max_requests:
            worker.requests = int(msg.get("requests", worker.requests))
            self.task(self._recycle(worker))

    def is_ready(self) -> bool:
        """Every slot has a READY worker, and no shutdown has begun (the /readyz probe)."""
        return self.booted and not self.stopping and all(
            slot.worker is not None and slot.worker.state is State.READY for slot in self.slots)

    def status(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "app": self.config.app,
            "name": self.config.name or self.config.app,
            "pid": os.getpid(),
            "generation": self.generation,
            "ready": self.is_ready(),
            "stopping": self.stopping,
            "reloading": self.reloading,
            "uptime": round(now - self.started, 3),
            "workers": [
                {"slot": w.slot, "pid": w.pid, "generation": w.generation, "state": w.state.value,
                 "uptime": round(now - w.started, 3), "connections": w.conns, "requests": w.requests,
                 "restarts": self.slots[w.slot].restarts if w.slot < len(self.slots) else 0}
                for w in sorted(self.workers.values(), key=lambda w: (w.slot, w.generation))
            ],
        }

    def reap(self) -> None:
        """Collect every child that exited (as PID 1, orphans we never started too)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self.on_exit(worker, os.waitstatus_to_exitcode(status))

    def on_exit(self, worker: WorkerProcess, code: int) -> None:
        if worker.chan:
            worker.chan.pump()  # read a last boot error before deciding what the exit means
            worker.chan.close()
        was_draining = worker.state is State.DRAINING
        was_ready = worker.state in (State.READY, State.DRAINING)
        worker.state = State.EXITED
        worker.exit_status = code
        if worker.kill_timer:
            worker.kill_timer.cancel()
        if worker.ready and not worker.ready.done():
            worker.ready.set_result(False)
        if worker.exited and not worker.exited.done():
            worker.exited.set_result(code)
        if self.balancer:
            self.balancer.gone(worker)
        slot = self.slot_of(worker)
        if self.stopping:
            if not any(w.alive for w in self.workers.values()):
                self.finish()
            return
        if slot is None or was_draining or not self.booted:
            return  # drained, scaled away, or a reload candidate (reload.py decides)
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

    def schedule_restart(self, slot: Slot) -> None:
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * BACKOFF_FACTOR**slot.failures)
        slot.failures += 1
        slot.restart_timer = self.loop.call_later(delay, self.start_worker, slot)

    def drain(self, worker: WorkerProcess, timeout: float | None = None) -> None:
        """Tell a worker to finish what it serves and exit; SIGKILL it if it overstays."""
        if not worker.alive or worker.state is State.DRAINING:
            return
        timeout = self.config.graceful_timeout if timeout is None else timeout
        if worker.state is not State.READY:
            self.kill(worker)  # nothing served yet: nothing to drain
            return
        worker.state = State.DRAINING
        if not (worker.chan and worker.chan.send(channel.DRAIN, timeout=timeout)):
            worker.signal(signal.SIGTERM)
        worker.kill_timer = self.loop.call_later(timeout + KILL_GRACE, self.kill, worker)

    def kill(self, worker: WorkerProcess) -> None:
        worker.signal(signal.SIGKILL)

    def watchdog(self) -> None:
        """Abort workers whose loop stopped heartbeating; kill those that never became ready."""
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.state is State.BOOTING and now - worker.started > self.config.ready_timeout:
                worker.boot_error = worker.boot_error or f"not ready after {self.config.ready_timeout:g}s"
                self.kill(worker)
            elif (worker.state in (State.READY, State.DRAINING) and self.config.timeout and not worker.aborted
                  and now - worker.last_heartbeat > self.config.timeout):
                self.log.error(f"{worker.describe()} sent no heartbeat for {self.config.timeout:g}s: "
                               "aborting it (its stack follows)")
                worker.aborted = True
                worker.signal(signal.SIGABRT)
                worker.kill_timer = self.loop.call_later(KILL_GRACE, self.kill, worker)
        self.loop.call_later(WATCHDOG_INTERVAL, self.watchdog)

    # ---- stopping --------------------------------------------------------------------------------

    def stop(self, graceful: bool, code: int = 0) -> None:
        """Graceful: drain every worker, then exit. Otherwise (or asked twice): stop them at once."""
        first = not self.stopping
        self.stopping = True
        if first or not graceful:
            self.exit_code = code
        if first:
            self.notifier.stopping("draining" if graceful else "stopping")
            if self.balancer:
                self.balancer.stop()
            for task in list(self._tasks):
                task.cancel()
            for slot in self.slots:
                if slot.restart_timer:
                    slot.restart_timer.cancel()
        if graceful and first:
            self.log.info(f"stopping: draining {sum(w.alive for w in self.workers.values())} workers")
            for worker in list(self.workers.values()):
                self.drain(worker)
        else:
            if first or graceful:
                self.log.info("stopping now")
            for worker in list(self.workers.values()):
                worker.signal(signal.SIGQUIT if worker.state in (State.READY, State.DRAINING) else signal.SIGKILL)
                if worker.kill_timer:
                    worker.kill_timer.cancel()
                worker.kill_timer = self.loop.call_later(1.0, self.kill, worker)
        if not any(w.alive for w in self.workers.values()):
            self.finish()

    def finish(self) -> None:
        if self.balancer:
            self.balancer.close()
        if not self.finished.done():
            self.finished.set_result(self.exit_code)


def run(config: Config, listeners: list[Listener], log: Log, reconfigure: Callable[[], Config] | None,
        notifier: Notifier | None = None) -> int:
    """Run a master until it stops; its exit code."""
    async def main() -> int:
        return await Master(config, listeners, log, reconfigure, notifier).run()

    return asyncio.run(main())
