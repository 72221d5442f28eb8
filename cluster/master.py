"""The master: owns the listeners and the worker table, and turns signals into actions.

In gunicorn's arbiter shape: a signal handler only records the signal (the loop's signal wakeup);
the loop then runs `handle_<signal>`, and a tick aborts what hangs. Replacing workers (reload,
recycle, scaling) is the rollout's (cluster/rollout.py), restarting what died is supervision's
(cluster/supervision.py); the master is the `Supervisor` both act through.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prun.cluster import control, output
from prun.cluster.balance import LeastConn
from prun.cluster.config import Config
from prun.cluster.errors import PrunError
from prun.cluster.health import HealthServer
from prun.cluster.listeners import Listener
from prun.cluster.log import Log, plural
from prun.cluster.metrics import Tally
from prun.cluster.notify import Notifier
from prun.cluster.recycling import Recycler
from prun.cluster.rollout import Rollout, Slot
from prun.cluster.supervision import Supervision
from prun.cluster.worker import State, WorkerProcess, describe_exit, exit_status, spawn
from prun.runtime import channel

if TYPE_CHECKING:
    from prun.cluster.gunicorn import MasterHooks

SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN, signal.SIGTTOU,
           signal.SIGUSR1, signal.SIGCHLD)
EXIT_GAVE_UP = 3  # as for a first generation that cannot boot: the app cannot run as it is
STOP_GRACE = 1.0  # a fast stop: after SIGQUIT, before SIGKILL
WATCHDOG_INTERVAL = 0.5


class Master:
    """One app's master process."""

    def __init__(
        self,
        config: Config,
        listeners: list[Listener],
        log: Log,
        reconfigure: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
        control_fd: int | None = None,
        hooks: MasterHooks | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks  # a gunicorn config file's: when_ready here; workers run theirs (hooks_file)
        self.notifier = notifier or Notifier(None)
        self.container = config.container or os.getpid() == 1
        self.listeners = listeners
        self.log = log
        self.rebuild_config = reconfigure
        self.workers: dict[int, WorkerProcess] = {}  # by pid: every live worker, whatever its state
        self.stopping = False
        self.booted = False  # the first generation is ready; until then a death ends the master
        self.exit_code = 0
        self.started = time.monotonic()
        self.loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[int] = self.loop.create_future()
        self.rollout: Rollout[WorkerProcess] = Rollout(self, config, log, self.notifier, config.instances, held=True)
        self.supervision = Supervision(self.loop, log, self.rollout, self.workers, lambda: self.config)
        self.balancer = LeastConn(listeners, self.loop, log) if config.balance == "leastconn" else None
        # under the daemon: its control channel (cluster/control.py), the only way it learns what happens here
        self.control = control.ControlServer(control_fd, self.loop, self.answer) if control_fd is not None else None
        self.emit = self.control.publish if self.control else _ignore
        self.rollout.emit = self.emit
        self.tally = Tally()
        self.rollout.on_reloaded = self.tally.reloaded
        self.recycler = Recycler(lambda: self.config, self.rollout, log, self.tally, self.emit)
        self.health = HealthServer(config.health, self.is_ready, self.status, self.metrics) if config.health else None
        self.output = output.for_master(config, log, self.loop, under_daemon=self.control is not None)

    @property
    def slots(self) -> list[Slot[WorkerProcess]]:
        return self.rollout.slots

    # ---- the main line -------------------------------------------------------------------------

    async def run(self) -> int:
        for signum in SIGNALS:
            self.loop.add_signal_handler(signum, self.dispatch, signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # what came meanwhile is dispatched now
        self.reap()  # anything that exited before the handler was in place
        if self.control:
            self.control.start()  # before any worker: the daemon hears every event
        if self.container:
            self.log.info(f"container mode{' (PID 1)' if os.getpid() == 1 else ''}: reaping every child")
        if self.health:
            self.log.info(f"health endpoint on http://{await self.health.start()}/readyz")
        if self.balancer:
            self.balancer.start()
        for slot in self.slots:
            self.supervision.start(slot)
        self.ticking = self.loop.call_later(WATCHDOG_INTERVAL, self.tick)
        try:
            if await self.first_generation_ready():
                urls = ", ".join(listener.address for listener in self.listeners)
                self.log.info(f"ready: {plural(len(self.slots), 'worker')} of {self.config.app} (gen 1) on {urls}")
                self.emit(control.Online(self.rollout.serving, self.rollout.generation))
                self.notifier.ready(f"{plural(len(self.slots), 'worker')} ready, gen 1")
                if self.hooks:
                    self.hooks.run("when_ready")
                self.rollout.release()
                self.recycler.start()
            code = await self.finished
            self.ticking.cancel()  # nothing else touches the processes the sweep stops
            await self.supervision.sweep()
            return code
        finally:
            self.ticking.cancel()
            self.recycler.stop()
            if self.health:
                self.health.close()
            if self.control:
                self.control.close()
            self.close_output()

    def close_output(self) -> None:
        """The relay's last lines are written before the master exits; later lines go straight to stderr."""
        if self.output:
            self.output.close()
            self.log.output = None

    async def first_generation_ready(self) -> bool:
        """Wait for every first worker; if any cannot boot, stop all and end with exit code 3."""
        workers = {slot.worker.ready: slot.worker for slot in self.slots if slot.worker}
        pending = set(workers)
        failed = None
        while pending and failed is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = next((workers[fut] for fut in done if not fut.result()), None)
        self.booted = failed is None
        if failed is not None and not self.stopping:
            self.emit(control.BootFailed(f"{failed.describe()} could not boot: {failed.why_not_ready()}"))
            self.stop(graceful=False, code=exit_status(failed.exit_status or 0) or 1)
            self.log.error(f"{failed.describe()} could not boot: {failed.why_not_ready()}",  # the last line
                           traceback=failed.boot_traceback)
        return self.booted

    def tick(self) -> None:
        """Murder the hung (the count is kept by supervision's restarts); under the daemon, publish the status."""
        self.supervision.abort_hung(list(self.workers.values()), self.config.timeout)
        self.supervision.stop_orphans()
        self.ticking = self.loop.call_later(WATCHDOG_INTERVAL, self.tick)

    # ---- signals ---------------------------------------------------------------------------------

    def dispatch(self, signum: int) -> None:
        handler = getattr(self, "handle_" + signal.Signals(signum).name[3:].lower())
        handler()

    def handle_hup(self) -> None:
        if not self.stopping:
            self.rollout.request_reload()

    def handle_term(self, signum: int = signal.SIGTERM) -> None:
        self.stop(graceful=not self.stopping, code=0 if not self.stopping else 128 + signum)

    def handle_int(self) -> None:
        self.handle_term(signal.SIGINT)

    def handle_quit(self) -> None:
        self.stop(graceful=False, code=128 + signal.SIGQUIT)

    def handle_ttin(self) -> None:
        self.rollout.request_scale(+1)

    def handle_ttou(self) -> None:
        self.rollout.request_scale(-1)

    def handle_usr1(self) -> None:
        """Reopen --log-file (after logrotate moved it) in the master and in every worker."""
        self.reopen_access_log()
        if not self.config.log_file:
            if self.control:  # under the daemon: its log writer has the files
                self.emit(control.ReopenLogs())
                self.log.info("USR1: the daemon's log writer reopens the log files")
            else:
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
                    worker.chan.send(channel.LogFile(), fds=[fd])
        finally:
            os.close(fd)
        self.log.info(f"reopened log file {self.config.log_file}")

    def reopen_access_log(self) -> None:
        """Foreground --access-log-file: the master writes it, and opens it anew on USR1."""
        if self.output and self.config.access_log_file and self.control is None:
            try:
                output.reopen_access_log(self.output, os.path.abspath(self.config.access_log_file))
            except PrunError as exc:
                self.log.error(str(exc))
            else:
                self.log.info(f"reopened access log file {self.config.access_log_file}")

    def handle_chld(self) -> None:
        self.reap()

    # ---- the Supervisor the rollout acts through ---------------------------------------------------

    def reconfigure(self) -> Config:
        """Re-read the config (if it came from a file or the environment) as a reload begins."""
        if self.rebuild_config is not None:
            config = self.rebuild_config()
            config.instances = len(self.slots)  # scaling is TTIN/TTOU's business, not a reload's
            self.config = config
        return self.config

    def spawn(self, slot: int, generation: int) -> WorkerProcess:
        """A new worker for `slot`, registered but not yet the slot's own."""
        jitter = self.config.max_requests_jitter
        limit = self.config.max_requests + (int.from_bytes(os.urandom(2), "little") % (jitter + 1) if jitter else 0)
        options = self.config.worker_options(slot, generation, limit if self.config.max_requests else 0)
        if self.hooks and self.hooks.hooks and self.hooks.hooks.worker:
            options.hooks_file = os.path.abspath(self.hooks.hooks.path)
        # under leastconn too: a worker accepts on them itself while it is the only one (cluster/balance.py)
        listening = [listener.sock for listener in self.listeners]
        environ = dict(os.environ, **{self.config.instance_var: str(slot)})  # PM2's NODE_APP_INSTANCE
        worker = spawn(options, listening, self.loop, self.on_message, environ=environ,
                       capture=self.output is not None,
                       access=self.output is not None and bool(self.config.access_log_file))
        self.workers[worker.pid] = worker
        self.emit(control.WorkerStarted(slot, worker.pid, generation))
        if self.output:
            self.output.attach(worker.outputs, worker.slot, worker.pid)
        if self.balancer:
            self.balancer.add(worker)
        return worker

    def drain(self, worker: WorkerProcess, timeout: float) -> None:
        """Tell a worker to finish what it serves and exit (the rollout holds the deadline)."""
        if not worker.alive or worker.state is State.DRAINING:
            return
        if worker.state is not State.READY:
            self.kill(worker)  # nothing served yet: nothing to drain
            return
        worker.state = State.DRAINING
        if not (worker.chan and worker.chan.send(channel.Drain(timeout=timeout, stopping=self.stopping))):
            worker.signal(signal.SIGTERM)
        if self.balancer:
            self.balancer.draining(worker)

    def kill(self, worker: WorkerProcess) -> None:
        worker.signal(signal.SIGKILL)

    # ---- workers ---------------------------------------------------------------------------------

    def on_message(self, worker: WorkerProcess, msg: channel.Message, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        if isinstance(msg, channel.Heartbeat):
            worker.last_heartbeat = time.monotonic()
            worker.conns = msg.conns
            worker.requests = msg.requests
            worker.rss = msg.rss
            worker.opened = msg.opened
            if worker.rss_told and msg.rss >= 2 * worker.rss_told:
                self.supervision.memory_grew(worker)
            if self.balancer:
                self.balancer.acknowledged(worker, msg.accepted)
                self.balancer.heard(worker)
            self.recycler.heartbeat(worker, msg.rss)
        elif isinstance(msg, channel.Ready):
            worker.state = State.READY
            worker.rss = worker.rss_ready = worker.rss_told = msg.rss
            worker.last_heartbeat = time.monotonic()
            if not worker.ready.done():
                worker.ready.set_result(True)
            self.log.info(f"{worker.describe()} ready")
            if self.balancer:
                self.balancer.ready(worker)
        elif isinstance(msg, channel.BootFailure):
            worker.boot_error = msg.message
            worker.boot_traceback = msg.traceback
        elif isinstance(msg, channel.Recycle) and self.config.max_requests:
            worker.requests = msg.requests
            self.tally.restarted(worker.slot, "max_requests")
            self.rollout.request_recycle(worker, f"served {worker.requests} requests")

    def is_ready(self) -> bool:
        """Every slot has a READY worker (but those --no-autorestart left empty), and no shutdown has begun (the
        /readyz probe)."""
        return self.booted and not self.stopping and self.rollout.serving > 0 and all(
            slot.finished or (slot.worker is not None and slot.worker.state is State.READY) for slot in self.slots)

    def status(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "app": self.config.app,
            "name": self.config.name or self.config.app,
            "pid": os.getpid(),
            "generation": self.rollout.generation,
            "ready": self.is_ready(),
            "booted": self.booted,  # the first generation served: the app is online
            "slots": len(self.slots),
            "finished": [slot.index for slot in self.slots if slot.finished],  # --no-autorestart left them empty
            "stopping": self.stopping,
            "reloading": self.rollout.reloading,
            "uptime": round(now - self.started, 3),
            "workers": [
                {"slot": w.slot, "pid": w.pid, "generation": w.generation, "state": w.state.value,
                 "uptime": round(now - w.started, 3), "connections": w.conns, "requests": w.requests, "rss": w.rss,
                 "restarts": self.slots[w.slot].restarts if w.slot < len(self.slots) else 0}
                for w in sorted(self.workers.values(), key=lambda w: (w.slot, w.generation))
            ],
        }

    def metrics(self) -> bytes:
        """The /metrics page (cluster/metrics.py)."""
        from prun.cluster.metrics import WorkerView, render

        views = [WorkerView(w.slot, w.pid, w.state.value, w.conns, w.requests, len(w.inflight))
                 for w in self.workers.values() if w.alive]
        return render(self.config.name or self.config.app, self.rollout.generation, views, self.tally)

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
        if not worker.ready.done():
            worker.ready.set_result(False)
        if not worker.exited.done():
            worker.exited.set_result(code)
        if self.balancer:
            self.balancer.gone(worker)
        self.tally.worker_gone(worker.slot, worker.requests)
        self.supervision.worker_gone()
        slot = self.rollout.slot_of(worker)
        crashed = not self.stopping and slot is not None and not was_draining and (self.booted or was_ready)
        ending = None
        if crashed and slot is not None:
            ending = self.supervision.died(slot, worker, code, was_ready)
            if not slot.finished:
                self.tally.restarted(worker.slot, "hung" if worker.aborted else "crash")
        # otherwise: drained, scaled away, a candidate (the rollout decides), or a first boot that failed
        finished = crashed and slot is not None and slot.finished
        reason = (worker.boot_error or describe_exit(code)) + (" (--no-autorestart)" if finished else "")
        self.emit(control.WorkerExited(worker.slot, worker.pid, worker.generation, reason,
                                       restarting=crashed and not finished, finished=finished))
        if self.stopping:
            if not any(w.alive for w in self.workers.values()):
                self.finish()
        elif ending is not None:  # the restart policy says the app stops here
            crash = code not in self.config.stop_exit_codes and (code != 0 or self.config.autorestart)
            self.end(ending, errored=crash)

    # ---- stopping --------------------------------------------------------------------------------

    def stop(self, graceful: bool, code: int = 0) -> None:
        """Graceful: drain every worker, then exit. Otherwise (or asked twice): stop them at once."""
        first = not self.stopping
        self.stopping = True
        if first or not graceful:
            self.exit_code = code
        if first:
            self.notifier.stopping("draining" if graceful else "stopping")
            self.emit(control.Stopping(graceful))
            if self.balancer:
                self.balancer.stop()
            self.rollout.stop()
            self.supervision.stop()
        if graceful and first:
            self.log.info(f"stopping: draining {plural(sum(w.alive for w in self.workers.values()), 'worker')}")
            for worker in list(self.workers.values()):
                self.rollout.retire(worker)
        else:
            if first or graceful:
                self.log.info("stopping now")
            for worker in list(self.workers.values()):
                worker.signal(signal.SIGQUIT if worker.state in (State.READY, State.DRAINING) else signal.SIGKILL)
                if worker.kill_timer:
                    worker.kill_timer.cancel()
                worker.kill_timer = self.loop.call_later(STOP_GRACE, self.kill, worker)
        if not any(w.alive for w in self.workers.values()):
            self.finish()

    def end(self, reason: str, errored: bool) -> None:
        """Stop the app on the restart policy's word: errored (exit 3) or finished (exit 0), and say why."""
        if errored:
            self.log.error(f"{reason}: stopping")
        else:
            self.log.info(f"{reason}: stopping")
        self.emit(control.Ended(reason, errored))
        self.stop(graceful=True, code=EXIT_GAVE_UP if errored else 0)

    async def answer(self, request: control.Request) -> control.Reply:
        """A request of the daemon's control channel, answered once done."""
        if isinstance(request, control.Status):
            return control.Reply(request.id, True, workers=len(self.slots), status=self.status())
        if isinstance(request, control.Stop):
            self.stop(graceful=True)
            return control.Reply(request.id, True, workers=len(self.slots))
        if self.stopping:
            return control.Reply(request.id, False, "the master is stopping", len(self.slots))
        if isinstance(request, control.Reload):
            reason = await self.rollout.request_reload()
        else:
            reason = await self.rollout.request_scale(to=max(1, request.count))
        return control.Reply(request.id, reason is None, reason or "", self.rollout.serving)

    def finish(self) -> None:
        if self.balancer:
            self.balancer.close()
        if not self.finished.done():
            self.finished.set_result(self.exit_code)


def _ignore(event: object) -> None:
    """Where events go without a daemon."""


def run(config: Config, listeners: list[Listener], log: Log, reconfigure: Callable[[], Config] | None,
        notifier: Notifier | None = None, control_fd: int | None = None, hooks: MasterHooks | None = None) -> int:
    """Run a master until it stops; its exit code."""
    # A HUP or TTOU sent right after `listening on` must not find the default action (exit, stop):
    # they wait, blocked, until the master's handlers are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

    async def main() -> int:
        return await Master(config, listeners, log, reconfigure, notifier, control_fd, hooks).run()

    return asyncio.run(main())
