"""Runs one app's processes for the daemon: its listener holder, its log writer, its master.

The master (cluster mode: `prun run`; fork mode: forkmode.py) is started in its own session with its
output going to the app's log writer, so it depends on the daemon for nothing: the daemon may die and a
new one adopt it. What the daemon knows of it comes from its control channel (cluster/control.py): a
Status reply when the daemon connects, then its events; its exit from a pidfd. Log lines are for people.

The daemon's loop never waits on a child: exits come from pidfds (a child is reaped with a non-blocking
poll once its pidfd says it has exited), requests to a master are answered on its channel or time out.
The holder and the log writer are supervised: one that dies is replaced from the sockets and pipe ends
the daemon keeps, so the listeners stay open and the app's output keeps flowing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from prun.cluster import control
from prun.cluster.daemon import cgroup, tree
from prun.cluster.daemon.app import ERRORED, FORK_KILL_TIMEOUT_CAP, LAUNCHING, ONLINE, RELOADING, STOPPED, STOPPING, App
from prun.cluster.daemon.cgroup import Cgroup
from prun.cluster.daemon.home import Home, alive, start_time
from prun.cluster.daemon.link import Link, LinkLost
from prun.cluster.daemon.logfiles import Rotation
from prun.cluster.daemon.policy import Policy
from prun.cluster.errors import PrunError
from prun.cluster.logopen import open_log


class God(Protocol):
    """What a Runner needs of the daemon (cluster/daemon/god.py), so the runner never imports it back."""

    home: Home
    children: dict[int, subprocess.Popen[bytes]]
    stopping: bool

    def say(self, message: str) -> None: ...

    def publish(self, event: str, app: App, **fields: Any) -> None: ...

    def persist(self, app: App) -> None: ...


BACKOFF_RESET_AFTER = 30.0  # a master up this long earns its app a fresh backoff (policy.py: the delays)
STOP_TIMEOUT_MARGIN = 5.0  # beyond the app's graceful timeout, before SIGKILL
KILL_WAIT = 5.0  # after SIGKILL, for the exit to be seen
LEFTOVER_GRACE = 5.0  # after a stop, for what outlived a master to end on SIGTERM (fork mode: --kill-timeout)
REQUEST_TIMEOUT = 10.0  # a status or stop request: the master answers these at once
RECONNECT_DELAY = 0.2  # a dropped control connection of a live master is made again after this


@dataclass(eq=False)
class MasterRun:
    """One start of an app's master: its pid, its exit, whether it came online. Ends exactly once."""

    pid: int
    started: int | None
    proc: subprocess.Popen[bytes] | None  # None: adopted (its status went to its first parent)
    loop: asyncio.AbstractEventLoop
    token: str = ""  # in the environment of every process of this run (tree.py)
    cgroup: Cgroup | None = None  # its cgroup, where prun may make one
    pidfd: int = -1
    expected: bool = False  # a stop was asked: its exit is no crash
    ended: control.Ended | None = None  # the restart policy stopped it: do not start it again
    failure: str = ""  # why it could not come online, as it said (BootFailed)
    exited: asyncio.Future[int | None] = field(init=False)  # its exit code (None: not our child)
    online: asyncio.Future[bool] = field(init=False)  # True once Online, False if it exited first
    began: float = field(init=False)

    def __post_init__(self) -> None:
        self.exited = self.loop.create_future()
        self.online = self.loop.create_future()
        self.began = time.monotonic()

    @property
    def running(self) -> bool:
        return not self.exited.done()


class Runner:
    """Starts, watches and stops one app's processes for the God."""

    def __init__(self, god: God, app: App) -> None:
        self.god = god
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.run: MasterRun | None = None
        self.link = Link(self.loop, self.on_event, self.on_link_lost)
        self.watched: dict[int, int] = {}  # pidfd -> pid, for the holder and the log writer

    # ---- listeners -----------------------------------------------------------------------------

    def hold_listeners(self) -> None:
        """Make sure the daemon has the app's sockets: from its live holder, or bound anew with a new holder."""
        app = self.app
        if app.spec.mode == "fork" or app.fds:
            return
        from prun.cluster.daemon import holder

        path = self.god.home.holder_socket(app.id)
        if alive(app.holder_pid, app.holder_started):
            try:
                app.fds = holder.fetch(path, len(app.spec.bind))
                self.watch_helper(app.holder_pid, self.holder_exited)
                return
            except OSError as exc:
                self.god.say(f"{app.name}: the listener holder did not answer ({exc})")
                self.kill_holder()
        if alive(app.pid, app.pid_started) and app.master_fds:
            # the holder is gone but the master serves: copy its sockets out of it, then hold them anew
            app.fds = copy_from_process(app.pid, app.master_fds)
            self.start_holder()
            self.god.say(f"{app.name}: took its listeners back from master {app.pid} (pidfd_getfd)")
            return
        from prun.cluster import listeners as listeners_mod

        bound = listeners_mod.bind_all(app.spec.bind, app.spec.backlog)  # PrunError: cannot listen on ...
        app.listen = [listener.address for listener in bound]
        app.fds = [listener.sock.detach() for listener in bound]
        self.start_holder()

    def start_holder(self) -> None:
        """A holder for the daemon's copies of the sockets; its own socket bound here, so nothing waits on it."""
        app = self.app
        path = self.god.home.holder_socket(app.id)
        if os.path.exists(path):
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(path)
            os.chmod(path, 0o600)
            server.listen(8)
            proc = subprocess.Popen(
                [sys.executable, "-m", "prun.cluster.daemon.holder", str(server.fileno()), app.name,
                 *map(str, app.fds)],
                pass_fds=[server.fileno(), *app.fds], start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=self.helper_env())
        finally:
            server.close()
        self.god.children[proc.pid] = proc
        app.holder_pid, app.holder_started = proc.pid, start_time(proc.pid)
        self.watch_helper(proc.pid, self.holder_exited)

    def holder_exited(self, pid: int) -> None:
        """A holder that died unasked is replaced at once: the daemon still has the sockets."""
        app = self.app
        if pid != app.holder_pid:
            return
        app.holder_pid, app.holder_started = 0, None
        if app.fds and not self.god.stopping:
            self.start_holder()
            self.god.say(f"{app.name}: the listener holder (pid {pid}) died; pid {app.holder_pid} holds the "
                         "sockets now")
            self.god.persist(app)

    @staticmethod
    def helper_env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME", "LANG", "PRUN_HOME")}

    def release_listeners(self) -> None:
        """Close the app's sockets everywhere (stop, delete): clients are refused from now on, as they should."""
        app = self.app
        for fd in app.fds:
            os.close(fd)
        app.fds = []
        self.kill_holder()
        for bind in app.spec.bind:  # the holder is SIGKILLed: its unix sockets' files are ours to remove
            if bind.startswith("unix:"):
                _unlink(bind[5:])
        _unlink(self.god.home.holder_socket(app.id))

    def kill_holder(self) -> None:
        pid = self.app.holder_pid
        self.app.holder_pid, self.app.holder_started = 0, None  # its exit is no news now
        if pid and alive(pid, start_time(pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---- the log writer ------------------------------------------------------------------------

    def start_log_writer(self, out_path: str, err_path: str) -> tuple[int, int]:
        """The process that writes (and rotates) the app's log files; the two pipe ends the master writes to.

        The daemon keeps the read ends too: the pipes never break while it lives, and a writer that dies is
        replaced on the same pipes (what was queued in them is not lost).
        """
        for path in (out_path, err_path):  # created here, so that they exist once the app is "started"
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.close(open_log(path))  # never through another user's link, never into their file
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.close_log_pipes()
        self.app.log_fds = [out_r, err_r]
        try:
            self.spawn_log_writer()
        except OSError:
            self.close_log_pipes()
            for fd in (out_w, err_w):
                os.close(fd)
            raise
        return out_w, err_w

    def spawn_log_writer(self, replacing: tuple[int, str] | None = None) -> None:
        """The writer on the app's pipes; `replacing`: (pid, how it ended) of the one it takes over from (it
        writes each line the dead one had not written, once, and says so in the err log)."""
        app, spec = self.app, self.app.spec
        out_path, err_path = app.log_paths(self.god.home.logs)
        out_r, err_r = app.log_fds
        rotation = Rotation(spec.log_max_size, spec.log_retain, spec.log_compress, spec.log_rotate_daily)
        proc = subprocess.Popen(
            [sys.executable, "-m", "prun.cluster.daemon.logwriter", str(out_r), str(err_r), out_path, err_path,
             "--name", app.name, "--time", spec.log_time, *rotation.arguments(),
             *([] if spec.merge_logs else ["--split"]),
             *(["--combined", spec.combined_file] if spec.combined_file else []),
             *(["--replacing", str(replacing[0]), "--how", replacing[1]] if replacing else [])],
            pass_fds=(out_r, err_r), start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, env=self.helper_env())
        self.god.children[proc.pid] = proc
        app.log_pid, app.log_started = proc.pid, start_time(proc.pid)
        app.log_read_fds = [out_r, err_r]  # pass_fds keeps the numbers: a later daemon copies them from it
        self.watch_helper(proc.pid, self.log_writer_exited)

    def log_writer_exited(self, pid: int) -> None:
        """A writer that ended on EOF is done; one that died is replaced on the same pipes."""
        app = self.app
        if pid != app.log_pid:
            return
        proc = self.god.children.get(pid)
        code = proc.poll() if proc is not None else None
        app.log_pid, app.log_started = 0, None
        if code == 0 or not app.log_fds:  # every writer of the pipes closed them: the writer's work is done
            self.close_log_pipes()
            return
        how = f"with status {code}" if code is not None and code >= 0 else (
            f"killed by {signal.Signals(-code).name}" if code is not None else "unseen")
        try:
            self.spawn_log_writer(replacing=(pid, how))
        except OSError as exc:
            self.god.say(f"{app.name}: cannot start a new log writer: {exc}")
            self.close_log_pipes()  # the app's writes fail rather than block on a pipe nobody reads
            return
        self.god.say(f"{app.name}: the log writer (pid {pid}) died {how}; pid {app.log_pid} took over its pipes")
        self.god.persist(app)

    def close_log_pipes(self) -> None:
        for fd in self.app.log_fds:
            os.close(fd)
        self.app.log_fds = []

    def reopen_logs(self) -> bool:
        """USR1 to the log writer: it reopens the files (after an external logrotate moved them)."""
        if alive(self.app.log_pid, self.app.log_started):
            os.kill(self.app.log_pid, signal.SIGUSR1)
            return True
        return False

    # ---- helpers' exits ------------------------------------------------------------------------

    def watch_helper(self, pid: int, on_exit: Any) -> None:
        """Call on_exit(pid) once the holder or log writer `pid` exits (a pidfd: the loop never waits)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.loop.call_soon(on_exit, pid)
            return

        def exited() -> None:
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
            self.watched.pop(pidfd, None)
            on_exit(pid)
            proc = self.god.children.pop(pid, None)
            if proc is not None:
                proc.poll()

        self.watched[pidfd] = pid
        self.loop.add_reader(pidfd, exited)

    # ---- the master ----------------------------------------------------------------------------

    def spawn(self) -> MasterRun:
        """Start the master (listeners held first, its log writer next); its exit and events are followed."""
        app = self.app
        self.hold_listeners()
        out_path, err_path = app.log_paths(self.god.home.logs)
        try:
            out, err = self.start_log_writer(out_path, err_path)
        except OSError as exc:
            raise PrunError(f"cannot write the logs of {app.name}: {exc.strerror or exc}") from None
        ctl: socket.socket | None = None
        token = tree.new_token()  # the marks of this run's processes, whatever they do (tree.py)
        group = Cgroup.create(f"{cgroup.PREFIX}{token}")
        try:
            ctl = control.listener(self.god.home.control_socket(app.id))
            argv = app.argv(ctl.fileno())
            proc = subprocess.Popen(group.command(argv) if group else argv, cwd=app.spec.cwd,
                                    env=dict(app.environment(), **tree.environment(token)),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    pass_fds=[*app.fds, ctl.fileno()], start_new_session=True)
        except OSError as exc:
            if group:
                group.remove()
            raise PrunError(f"cannot start {app.name}: {exc.strerror or exc}") from None
        finally:
            os.close(out)
            os.close(err)
            if ctl is not None:
                ctl.close()
        app.pid, app.pid_started = proc.pid, start_time(proc.pid)
        app.token, app.cgroup = token, group.path if group else ""
        app.master_fds = list(app.fds)  # pass_fds keeps the numbers
        app.status, app.workers = LAUNCHING, 0
        run = self.follow(MasterRun(proc.pid, app.pid_started, proc, self.loop, token, group))
        self.god.publish("started", app, pid=app.pid)
        self.god.persist(app)
        return run

    def adopt(self) -> bool:
        """Take over a master a previous daemon started; False if it is gone."""
        app = self.app
        if not alive(app.pid, app.pid_started):
            return False
        try:
            self.hold_listeners()
        except Exception as exc:  # the master serves anyway; a later restart binds again
            self.god.say(f"{app.name}: cannot get its listeners back: {exc}")
        self.adopt_log_pipes()
        group = Cgroup(app.cgroup) if app.cgroup and os.path.isdir(app.cgroup) else None
        self.follow(MasterRun(app.pid, app.pid_started, None, self.loop, app.token, group))
        self.god.publish("adopted", app, pid=app.pid)
        return True

    def adopt_log_pipes(self) -> None:
        """Copy the pipes' read ends out of the running log writer, to keep supervising it."""
        app = self.app
        if not (app.log_read_fds and alive(app.log_pid, app.log_started)):
            return
        try:
            app.log_fds = copy_from_process(app.log_pid, app.log_read_fds)
        except OSError as exc:
            self.god.say(f"{app.name}: cannot share its log writer's pipes ({exc}); not supervising it")
            return
        self.watch_helper(app.log_pid, self.log_writer_exited)

    def follow(self, run: MasterRun) -> MasterRun:
        """Watch a master's exit (pidfd) and connect to its control channel."""
        self.run = run
        try:
            run.pidfd = os.pidfd_open(run.pid)
        except ProcessLookupError:
            self.loop.call_soon(self.master_exited, run)
        else:
            self.loop.add_reader(run.pidfd, self.master_exited, run)
        self.connect(run)
        return run

    def connect(self, run: MasterRun) -> None:
        """(Re)connect to the master's control channel, then ask its status: the daemon's picture of it."""
        if not run.running or self.run is not run or self.link.up:
            return
        try:
            self.link.connect(self.god.home.control_socket(self.app.id))
        except OSError as exc:
            if run.proc is None:
                self.app.last_error = f"cannot reach the control channel of master {run.pid}: {exc}"
                self.god.say(f"{self.app.name}: {self.app.last_error}")
            else:  # ours: it listens already, so this is transient (EAGAIN: its backlog is full)
                self.loop.call_later(RECONNECT_DELAY, self.connect, run)
            return
        self.loop.create_task(self.resync(run))

    async def resync(self, run: MasterRun) -> None:
        try:
            reply = await self.link.request(control.Status, REQUEST_TIMEOUT)
        except (LinkLost, asyncio.TimeoutError):
            return
        status = reply.status or {}
        if self.run is not run or not run.running or status.get("pid") != run.pid:
            return
        app = self.app
        app.workers = int(status.get("slots") or reply.workers) - len(status.get("finished") or ())
        if status.get("stopping"):
            app.status = STOPPING
        elif status.get("booted"):
            self.came_online(run, app.workers)
        self.god.persist(app)

    def on_link_lost(self) -> None:
        run = self.run
        if run is not None and run.running:
            self.loop.call_later(RECONNECT_DELAY, self.connect, run)

    def master_exited(self, run: MasterRun) -> None:
        """The master's pidfd fired: reap it without waiting, then restart it or settle its state. Once a run."""
        if not run.running:
            return
        if self.run is run:
            self.link.pump()  # its last events (workers that exited, a failed boot) before its exit
        if run.pidfd >= 0:
            self.loop.remove_reader(run.pidfd)
            os.close(run.pidfd)
            run.pidfd = -1
        code = run.proc.poll() if run.proc is not None else None
        run.exited.set_result(code)
        if not run.online.done():
            run.online.set_result(False)
        if self.run is not run:
            return
        self.link.close()
        app = self.app
        pid, app.pid, app.pid_started = app.pid, 0, None
        was_online = app.status in (ONLINE, RELOADING)
        self.god.publish("exited", app, pid=pid, code=code if code is None or code >= 0 else None,
                         signal=signal.Signals(-code).name if code is not None and code < 0 else None,
                         expected=run.expected)
        if run.expected:
            return  # stop_master ends what is left, gently
        self.kill_leftovers(run)
        if was_online and time.time() - app.online_since >= BACKOFF_RESET_AFTER:
            app.failures = 0
        reason = app.last_error if not was_online and app.last_error else f"the master {describe_exit(code)}"
        app.workers, app.last_error = 0, reason
        policy = Policy.from_run_args(app.spec.run_args)
        stable = was_online and time.monotonic() - run.began >= policy.min_uptime
        app.unstable = 0 if stable else app.unstable + 1
        if run.ended is not None:  # the master's own policy ended it: errored, or finished
            self.settle(ERRORED if run.ended.errored else STOPPED, run.ended.reason)
        elif not app.spec.autorestart or self.god.stopping:
            self.settle(ERRORED, reason)
        elif policy.gives_up(app.unstable):
            self.settle(ERRORED, f"{reason}; gave up after {app.unstable} unstable restarts in a row "
                                 f"(--max-restarts {policy.max_restarts})")
        else:
            app.status = LAUNCHING  # again, after the backoff
            self.schedule_restart(reason)
        self.god.persist(app)

    def settle(self, status: str, reason: str) -> None:
        """The app ends here, as it is: nothing restarts it, and its sockets close (clients are refused at
        once, and the port is free for another start)."""
        app = self.app
        app.status, app.last_error = status, reason
        self.release_listeners()
        self.god.publish("errored" if status == ERRORED else "stopped", app, reason=reason)

    def schedule_restart(self, reason: str) -> None:
        app = self.app
        delay = Policy.from_run_args(app.spec.run_args).delay(app.failures)
        app.failures += 1
        app.restarts += 1
        self.god.publish("restarting", app, delay=round(delay, 3), reason=reason)
        app.restart_timer = self.loop.call_later(delay, self.restart_after_crash)

    def restart_after_crash(self) -> None:
        """The backoff passed: start the master again; if even that fails (EMFILE, its directory gone for a
        moment), try again after the next backoff: an app meant to run is never given up on here."""
        app = self.app
        app.restart_timer = None
        if self.god.stopping or (self.run is not None and self.run.running):
            return
        try:
            self.spawn()
        except Exception as exc:
            app.last_error = f"cannot restart: {exc}"
            self.god.say(f"{app.name}: {app.last_error}")
            app.unstable += 1
            policy = Policy.from_run_args(app.spec.run_args)
            if policy.gives_up(app.unstable):
                self.settle(ERRORED, f"{app.last_error}; gave up after {app.unstable} unstable restarts in a "
                                     f"row (--max-restarts {policy.max_restarts})")
            else:
                self.schedule_restart(app.last_error)
            self.god.persist(app)

    def kill_leftovers(self, run: MasterRun) -> None:
        """A master that died unasked: what it leaves (its workers die with it; a child of a worker, a
        fork-mode instance's children may not) is SIGKILLed at once, before a new master starts."""
        killed = tree.kill_tree(run.token, run.pid, run.cgroup)
        if killed:
            self.god.say(f"{self.app.name}: killed {len(killed)} processes master {run.pid} left")
        if run.cgroup:
            self.loop.call_later(1.0, run.cgroup.remove)  # once the killed have left it

    async def stop_leftovers(self, run: MasterRun) -> None:
        """After a stop: what outlived the master (a child that left its session) gets SIGTERM, then SIGKILL
        (fork mode: the app's --kill-signal, then SIGKILL after its --kill-timeout, as its instances)."""
        spec = self.app.spec
        if spec.mode == "fork":
            from prun.cluster.options import values_in

            signum = signal.Signals[values_in(spec.run_args, ("kill_signal",))["kill_signal"]]
            grace = min(spec.graceful_timeout, FORK_KILL_TIMEOUT_CAP)
        else:
            signum, grace = signal.SIGTERM, min(spec.graceful_timeout, LEFTOVER_GRACE)
        killed = await tree.stop_tree(run.token, run.pid, signum, grace, run.cgroup)
        if killed:
            self.god.say(f"{self.app.name}: killed {len(killed)} processes that outlived master {run.pid}")
        if run.cgroup:
            run.cgroup.remove()

    # ---- its events ----------------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        """One event of the master's control channel: the app's state follows it."""
        app, run = self.app, self.run
        if run is None or not run.running:
            return
        if isinstance(event, control.Online):
            self.came_online(run, event.workers)
        elif isinstance(event, control.BootFailed):  # a start that waits on it fails now, with this reason
            app.last_error = run.failure = event.reason
            if not run.online.done():
                run.online.set_result(False)
        elif isinstance(event, control.WorkerStarted):
            self.god.publish("worker_started", app, slot=event.slot, pid=event.pid, generation=event.generation)
        elif isinstance(event, control.WorkerExited):
            self.god.publish("worker_exited", app, slot=event.slot, pid=event.pid, reason=event.reason,
                             restarting=event.restarting, finished=event.finished)
            if event.finished:  # --no-autorestart: the app runs on with one worker fewer
                app.workers = max(0, app.workers - 1)
                app.last_error = f"worker {event.slot} {event.reason}"
            if event.restarting:
                app.restarts += 1
                app.last_error = event.reason
                self.god.publish("restarting", app, worker=f"worker {event.slot}", reason=event.reason)
        elif isinstance(event, control.ReloadStarted):
            if app.status == ONLINE:
                app.status = RELOADING
            self.god.publish("reload_started", app, generation=event.generation)
        elif isinstance(event, control.ReloadFinished):
            app.workers = event.workers
            if app.status == RELOADING:
                app.status = ONLINE
            if event.ok:
                app.restarts += 1
                self.god.publish("reload_finished", app, workers=event.workers, generation=event.generation)
            else:
                self.god.publish("reload_failed", app, reason=event.reason)
        elif isinstance(event, control.Scaled):
            app.workers = event.workers
            self.god.publish("scaled", app, workers=event.workers)
        elif isinstance(event, control.MemoryLimit):
            app.restarts += 1
            self.god.publish("memory_limit", app, pid=event.pid, worker=f"worker {event.slot}",
                             memory=event.memory, limit=event.limit)
        elif isinstance(event, control.Problem):
            app.last_error = event.message
        elif isinstance(event, control.Ended):
            run.ended = event
            app.last_error = event.reason
        elif isinstance(event, control.Stopping):
            if not run.expected:
                app.status = STOPPING
                self.god.publish("stopping", app, pid=run.pid)
        elif isinstance(event, control.ReopenLogs):
            self.reopen_logs()
            return
        self.god.persist(app)

    def came_online(self, run: MasterRun, workers: int) -> None:
        app = self.app
        app.workers = workers
        if app.status not in (ONLINE, RELOADING):
            app.status, app.online_since, app.last_error = ONLINE, time.time(), ""
            self.god.publish("online", app, pid=run.pid, workers=workers)
        if not run.online.done():
            run.online.set_result(True)

    # ---- requests ------------------------------------------------------------------------------

    async def request(self, kind: type[Any], timeout: float, **fields: Any) -> control.Reply:
        """A request to the running master; PrunError with a sentence if it cannot be answered."""
        run = self.run
        if run is None or not run.running:
            raise PrunError(f"{self.app.name} has no master running")
        try:
            return await self.link.request(kind, timeout, **fields)
        except LinkLost as exc:
            raise PrunError(f"{self.app.name}: {exc}") from None
        except asyncio.TimeoutError:
            raise PrunError(f"{self.app.name}: its master (pid {run.pid}) did not answer within {timeout:g}s"
                            ) from None

    async def status(self) -> dict[str, Any] | None:
        """The master's own /status (its workers), or None if it cannot say now."""
        try:
            reply = await self.request(control.Status, 1.0)
        except PrunError:
            return None
        return reply.status

    # ---- stopping ------------------------------------------------------------------------------

    async def stop_master(self) -> None:
        """Ask the master to stop (graceful drain) and wait for its exit; SIGKILL its session if it overstays."""
        app = self.app
        if app.restart_timer:
            app.restart_timer.cancel()
            app.restart_timer = None
        run = self.run
        if run is None or not run.running:
            return
        run.expected = True
        app.status = STOPPING
        self.god.publish("stopping", app, pid=run.pid)
        try:
            await self.link.request(control.Stop, 2.0)
        except (LinkLost, asyncio.TimeoutError):
            _signal(run.pid, signal.SIGTERM)  # no channel: the signal means the same
        try:
            await asyncio.wait_for(asyncio.shield(run.exited), app.spec.graceful_timeout + STOP_TIMEOUT_MARGIN)
        except asyncio.TimeoutError:
            self.god.say(f"{app.name}: master {run.pid} did not stop within "
                         f"{app.spec.graceful_timeout + STOP_TIMEOUT_MARGIN:g}s: killing its process tree")
            tree.kill_tree(run.token, run.pid, run.cgroup)
            try:
                await asyncio.wait_for(asyncio.shield(run.exited), KILL_WAIT)
            except asyncio.TimeoutError:
                raise PrunError(f"{app.name}: master {run.pid} is still there after SIGKILL") from None
        await self.stop_leftovers(run)

    def signal(self, signum: int) -> None:
        if alive(self.app.pid, self.app.pid_started):
            os.kill(self.app.pid, signum)

    def unwatch(self) -> None:
        """The daemon exits: stop following (the processes keep running for the next daemon)."""
        run = self.run
        if run is not None and run.pidfd >= 0:
            self.loop.remove_reader(run.pidfd)
            os.close(run.pidfd)
            run.pidfd = -1
        for pidfd in list(self.watched):
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
        self.watched.clear()
        self.link.close()


SYS_PIDFD_GETFD = 438  # Linux >= 5.6; os has no wrapper in Python 3.11


def copy_from_process(pid: int, fds: list[int]) -> list[int]:
    """Copies of another process's file descriptors (pidfd_getfd(2): same user, ptrace access allowed)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    copies: list[int] = []
    try:
        for fd in fds:
            copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if copy < 0:
                errno = ctypes.get_errno()
                for done in copies:
                    os.close(done)
                raise OSError(errno, f"pidfd_getfd({pid}, {fd}): {os.strerror(errno)}")
            os.set_inheritable(copy, False)
            copies.append(copy)
    finally:
        os.close(pidfd)
    return copies


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (its status went to the daemon that started it)"
    from prun.cluster.worker import describe_exit as describe

    return describe(code)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

