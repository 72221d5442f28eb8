"""Runs one app's processes for the daemon: its listener holder, its master, the master's lines.

The master (cluster mode: `prun run`; fork mode: forkmode.py) is started in its own session with its
output appended to the app's log files, so it depends on the daemon for nothing: the daemon may die and
a new one adopt it. The daemon follows the master's own lines in the err log ("prun: ready: ...") to
know when it is online, reloaded or scaled, and watches its pid through a pidfd (children and adopted
masters alike) to know when it exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Protocol

from prun.cluster.daemon import holder
from prun.cluster.daemon.app import ERRORED, LAUNCHING, ONLINE, STOPPING, App
from prun.cluster.daemon.home import Home, alive, start_time
from prun.cluster.daemon.logfiles import Follower, Rotation


class God(Protocol):
    """What a Runner needs of the daemon (cluster/daemon/god.py), so the runner never imports it back."""

    home: Home
    children: dict[int, subprocess.Popen[bytes]]
    stopping: bool

    def say(self, message: str) -> None: ...

    def publish(self, event: str, app: App, **fields: Any) -> None: ...

    def persist(self, app: App) -> None: ...

BACKOFF_FIRST = 0.1  # the workers' backoff, for masters
BACKOFF_FACTOR = 1.5
BACKOFF_CAP = 15.0
BACKOFF_RESET_AFTER = 30.0
STOP_TIMEOUT_MARGIN = 5.0  # beyond the app's graceful timeout, before SIGKILL
FOLLOW_INTERVAL = 0.05
LOG_WRITER_WAIT = 2.0  # after a master exits, for its log writer to write its last lines


class Runner:
    """Starts, watches and stops one app's processes for the God."""

    def __init__(self, god: God, app: App) -> None:
        self.god = god
        self.app = app
        self.loop = asyncio.get_running_loop()

    # ---- listeners -----------------------------------------------------------------------------

    def hold_listeners(self) -> None:
        """Make sure the daemon has the app's sockets: from its live holder, or bound anew with a new holder."""
        app = self.app
        if app.spec.mode == "fork" or app.fds:
            return
        path = self.god.home.holder_socket(app.id)
        if alive(app.holder_pid, app.holder_started):
            try:
                app.fds = holder.fetch(path, len(app.spec.bind))
                return
            except OSError as exc:
                self.god.say(f"{app.name}: the listener holder did not answer ({exc})")
                self.kill_holder()
        if alive(app.pid, app.pid_started) and app.master_fds:
            # the holder is gone but the master serves: copy its sockets out of it, then hold them anew
            app.fds = copy_from_process(app.pid, app.master_fds)
            self.start_holder(path)
            self.god.say(f"{app.name}: took its listeners back from master {app.pid} (pidfd_getfd)")
            return
        from prun.cluster import listeners as listeners_mod

        bound = listeners_mod.bind_all(app.spec.bind, app.spec.backlog)  # PrunError: cannot listen on ...
        app.listen = [listener.address for listener in bound]
        app.fds = [listener.sock.detach() for listener in bound]
        self.start_holder(path)

    def start_holder(self, path: str) -> None:
        app = self.app
        unlink = [a for b in app.spec.bind if b.startswith("unix:") for a in ("--unlink", b[5:])]
        proc = subprocess.Popen(
            [sys.executable, "-m", "prun.cluster.daemon.holder", path, app.name, *map(str, app.fds), *unlink],
            pass_fds=app.fds, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            env=self.holder_env())
        assert proc.stdout is not None
        proc.stdout.readline()  # "holding": its socket is bound
        proc.stdout.close()
        self.god.children[proc.pid] = proc
        app.holder_pid, app.holder_started = proc.pid, start_time(proc.pid)

    @staticmethod
    def holder_env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME", "LANG", "PRUN_HOME")}

    def release_listeners(self) -> None:
        """Close the app's sockets everywhere (stop, delete): clients are refused from now on, as they should."""
        app = self.app
        for fd in app.fds:
            os.close(fd)
        app.fds = []
        if app.holder_pid and alive(app.holder_pid, app.holder_started):
            holder.release(self.god.home.holder_socket(app.id))
        app.holder_pid, app.holder_started = 0, None

    def kill_holder(self) -> None:
        if alive(self.app.holder_pid, self.app.holder_started):
            os.kill(self.app.holder_pid, signal.SIGKILL)
        self.app.holder_pid, self.app.holder_started = 0, None

    # ---- the master ----------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the master (listeners held first, its log writer next); its exit and lines are followed."""
        app = self.app
        self.hold_listeners()
        out_path, err_path = app.log_paths(self.god.home.logs)
        try:
            out, err = self.start_log_writer(out_path, err_path)
        except OSError as exc:
            from prun.cluster.errors import PrunError

            raise PrunError(f"cannot write the logs of {app.name}: {exc.strerror or exc}") from None
        try:
            app.follower = Follower(err_path)
            app.follow_offset, app.follow_inode = app.follower.offset, app.follower.inode
            env = dict(app.environment(), PRUN_LOG_WRITER_PID=str(app.log_pid),  # the master's USR1 goes on to it
                       PRUN_STATUS_FILE=self.god.home.status_file(app.id))  # its workers, for prun monit
            app.proc = subprocess.Popen(app.argv(), cwd=app.spec.cwd, env=env,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=app.fds,
                                        start_new_session=True)
        except OSError as exc:
            from prun.cluster.errors import PrunError

            raise PrunError(f"cannot start {app.name}: {exc.strerror or exc}") from None
        finally:
            os.close(out)
            os.close(err)
        app.pid, app.pid_started = app.proc.pid, start_time(app.proc.pid)
        app.master_fds = list(app.fds)  # pass_fds keeps the numbers
        app.status, app.workers, app.expected_exit = LAUNCHING, 0, False
        self.watch()
        self.god.publish("started", app, pid=app.pid)
        self.god.persist(app)

    def start_log_writer(self, out_path: str, err_path: str) -> tuple[int, int]:
        """The process that writes (and rotates) the app's log files; the two pipe ends the master writes to."""
        app, spec = self.app, self.app.spec
        for path in (out_path, err_path):  # created here, so that they exist once the app is "started"
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        rotation = Rotation(spec.log_max_size, spec.log_retain, spec.log_compress, spec.log_rotate_daily)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prun.cluster.daemon.logfiles", str(out_r), str(err_r), out_path, err_path,
                 "--name", app.name, "--time", spec.log_time, *rotation.arguments(),
                 *([] if spec.merge_logs else ["--split"])],
                pass_fds=(out_r, err_r), start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=self.holder_env())
        except OSError:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        finally:
            os.close(out_r)
            os.close(err_r)
        self.god.children[proc.pid] = proc
        app.log_pid, app.log_started = proc.pid, start_time(proc.pid)
        return out_w, err_w

    def log_writer_done(self) -> bool:
        proc = self.god.children.get(self.app.log_pid)
        if proc is not None:
            return proc.poll() is not None
        return not alive(self.app.log_pid, self.app.log_started)

    def reopen_logs(self) -> bool:
        """USR1 to the log writer: it reopens the files (after an external logrotate moved them)."""
        if alive(self.app.log_pid, self.app.log_started):
            os.kill(self.app.log_pid, signal.SIGUSR1)
            return True
        return False

    def adopt(self) -> bool:
        """Take over a master a previous daemon started; False if it is gone."""
        app = self.app
        if not alive(app.pid, app.pid_started):
            return False
        try:
            self.hold_listeners()
        except Exception as exc:  # the master serves anyway; a later restart binds again
            self.god.say(f"{app.name}: cannot get its listeners back: {exc}")
        app.proc = None
        _, err_path = app.log_paths(self.god.home.logs)
        # read on from where the last daemon was (a ready line it missed), across a rotation if need be
        app.follower = Follower(err_path, app.follow_offset if app.follow_offset >= 0 else None, app.follow_inode)
        self.watch()
        self.god.publish("adopted", app, pid=app.pid)
        return True

    def watch(self) -> None:
        app = self.app
        self.unwatch()
        try:
            app.pidfd = os.pidfd_open(app.pid)
        except ProcessLookupError:
            self.loop.call_soon(self.exited)
        else:
            self.loop.add_reader(app.pidfd, self.exited)
        self.follow()

    def unwatch(self) -> None:
        app = self.app
        if app.pidfd >= 0:
            self.loop.remove_reader(app.pidfd)
            os.close(app.pidfd)
            app.pidfd = -1
        if app.follow_timer:
            app.follow_timer.cancel()
            app.follow_timer = None

    def exited(self, waited: float = 0.0) -> None:
        app = self.app
        if waited == 0.0 and app.pidfd >= 0:
            self.loop.remove_reader(app.pidfd)
        if not self.log_writer_done() and waited < LOG_WRITER_WAIT:  # the master's last lines are on their way
            self.loop.call_later(FOLLOW_INTERVAL, self.exited, waited + FOLLOW_INTERVAL)
            return
        self.follow(again=False)
        self.unwatch()
        code: int | None = None
        if app.proc is not None:
            code = app.proc.wait()
            app.proc = None
        expected = app.expected_exit
        pid, app.pid, app.pid_started = app.pid, 0, None
        detail = describe_exit(code)
        was_online = app.status == ONLINE
        self.god.publish("exited", app, pid=pid, code=code if code is None or code >= 0 else None,
                         signal=signal.Signals(-code).name if code is not None and code < 0 else None,
                         expected=expected)
        self.resolve("exit", detail)
        if expected:
            return
        up = time.time() - app.online_since if was_online else 0.0
        if up >= BACKOFF_RESET_AFTER:
            app.failures = 0
        reason = app.last_error if not was_online and app.last_error else f"the master {detail}"
        app.status, app.workers = ERRORED, 0
        app.last_error = reason
        if app.spec.autorestart and not self.god.stopping:
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * BACKOFF_FACTOR**app.failures)
            app.failures += 1
            app.restarts += 1
            self.god.publish("restarting", app, delay=round(delay, 3), reason=reason)
            app.restart_timer = self.loop.call_later(delay, self.restart_after_crash)
        else:
            self.god.publish("errored", app, reason=reason)
        self.god.persist(app)

    def restart_after_crash(self) -> None:
        self.app.restart_timer = None
        if self.app.status != ERRORED or self.god.stopping:
            return
        try:
            self.spawn()
        except Exception as exc:
            self.app.last_error = str(exc)
            self.god.say(f"{self.app.name}: cannot restart: {exc}")

    # ---- its lines -----------------------------------------------------------------------------

    def follow(self, again: bool = True) -> None:
        """Read the master's new lines in the err log (a poll: the file is written by another process)."""
        app = self.app
        app.follow_timer = None
        if app.follower is not None:
            lines = app.follower.read()
            app.follow_offset, app.follow_inode = app.follower.offset, app.follower.inode
            for line in lines:
                self.on_line(line.decode("utf-8", "replace"))
        if again and app.pidfd >= 0:
            app.follow_timer = self.loop.call_later(FOLLOW_INTERVAL, self.follow)

    def on_line(self, line: str) -> None:
        app = self.app
        if app.spec.log_time and not line.startswith("{"):  # --time: the log writer's prefix first
            words = time.strftime(app.spec.log_time).count(" ") + 1
            line = line.split(" ", words)[-1]
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                return
            if not isinstance(record, dict) or record.get("worker") is not None or "msg" not in record:
                return
            text = str(record["msg"])
            if record.get("level") not in (None, "info"):
                text = f"{record['level']}: {text}"
        elif line.startswith("prun: "):
            text = line[6:]
        else:
            return
        if text.startswith("ready: "):
            app.workers = _number(text[7:])
            app.status, app.online_since, app.last_error = ONLINE, time.time(), ""
            self.god.publish("online", app, pid=app.pid, workers=app.workers)
            self.resolve("online", text)
        elif text.startswith("reloading"):
            self.god.publish("reload_started", app)
        elif text.startswith("reload complete: "):
            app.workers = _number(text[17:])
            self.god.publish("reload_finished", app, workers=app.workers)
            self.resolve("reloaded", text)
        elif text.startswith("error: reload failed: "):
            reason = text[22:]
            self.god.publish("reload_failed", app, reason=reason)
            self.resolve("reload_failed", reason)
        elif text.startswith(("scaled up to ", "scaled down to ")):
            app.workers = _number(text.split(" to ", 1)[1])
            self.god.publish("scaled", app, workers=app.workers)
            self.resolve("scaled", text)
        elif "over --max-memory-restart (" in text:
            found = re.search(r"pid (\d+).*\((\d+) > (\d+) bytes\): replacing it", text)
            if found:
                pid, used, limit = map(int, found.groups())
                self.god.publish("memory_limit", app, pid=pid, memory=used, limit=limit,
                                 worker=text.split(" (pid", 1)[0])
            return
        elif "; restarting it" in text:  # a worker (or fork-mode instance) died and its master restarts it
            app.restarts += 1
            self.god.publish("restarting", app, worker=text.split(" (pid", 1)[0], reason=text.split("; ", 1)[0])
        elif text.startswith("already at 1 worker") or text.startswith("error: scaling up failed: "):
            self.resolve("scaled", text)
        elif text.startswith("error: "):
            app.last_error = text[7:]
        else:
            return
        self.god.persist(app)

    def expect(self, *kinds: str) -> asyncio.Future[str]:
        """A future set by the next line (or exit) of one of these kinds: 'online', 'reloaded', ..., 'exit'."""
        future: asyncio.Future[str] = self.loop.create_future()
        self.app.waiters.append((kinds, future))
        return future

    def resolve(self, kind: str, detail: str) -> None:
        for entry in list(self.app.waiters):
            kinds, future = entry
            if kind in kinds:
                self.app.waiters.remove(entry)
                if not future.done():
                    future.set_result(f"{kind}:{detail}")

    # ---- signals and stopping ------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        if alive(self.app.pid, self.app.pid_started):
            os.kill(self.app.pid, signum)

    async def stop_master(self) -> None:
        """TERM the master and wait for it (graceful drain); SIGKILL its session if it overstays."""
        app = self.app
        if app.restart_timer:
            app.restart_timer.cancel()
            app.restart_timer = None
        if not alive(app.pid, app.pid_started):
            if app.pid:
                self.exited()
            return
        app.expected_exit = True
        app.status = STOPPING
        self.god.publish("stopping", app, pid=app.pid)
        gone = self.expect("exit")
        pid = app.pid
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(gone), app.spec.graceful_timeout + STOP_TIMEOUT_MARGIN)
        except asyncio.TimeoutError:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            await gone


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


def _number(text: str) -> int:
    word = text.split(" ", 1)[0]
    return int(word) if word.isdigit() else 0
