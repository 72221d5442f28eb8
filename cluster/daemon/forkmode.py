"""Fork mode: the supervisor of an app that is a command or a script (no listener), one per app.

    python -m prun.cluster.daemon.forkmode --instances N [--kill-timeout S] [--control-fd FD] [--no-autorestart]
        [OPTIONS OF prun run] -- COMMAND [ARG]...

It plays the master's part for processes prun does not serve: it keeps N copies of COMMAND running
(each with its number 0..N-1 in --instance-var), each in a process group of its own, and follows the
master's restart policy (--max-restarts, --min-uptime, --restart-delay, --exp-backoff-restart-delay,
--stop-exit-codes, --no-autorestart). It answers the master's signals: HUP restarts the instances one by
one, TTIN/TTOU add or remove one, TERM/INT stop them all: --kill-signal (SIGINT, as PM2) to each
instance's process group, then SIGKILL after --kill-timeout. It is online once every instance has run for
--min-uptime. Under the daemon it speaks the master's control channel (cluster/control.py): the same
requests and events, an instance being a worker. Each instance writes into pipes of its own,
which the supervisor's output relay (cluster/output.py) reads, as a master does its workers': whole lines,
--log-format json records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from prun.cluster import control, output
from prun.cluster.daemon.tree import die_with_parent, reap_adopted
from prun.cluster.supervision import become_subreaper, restart_delay
from prun.cluster.worker import describe_exit as describe

BACKOFF_RESET_AFTER = 30.0
EXIT_GAVE_UP = 3  # as a master whose workers cannot run
POLICY = ("max_restarts", "min_uptime", "restart_delay", "exp_backoff_restart_delay", "stop_exit_codes",
          "instance_var", "kill_signal")


def log(message: str) -> None:
    print(f"prun: {message}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class Instance:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    unstable: int = 0  # exits in a row sooner than --min-uptime after it started
    restarts: int = 0
    timer: asyncio.TimerHandle | None = None
    finished: bool = False  # exited, and the policy says it stays so


class ForkSupervisor:
    def __init__(self, command: list[str], instances: int, kill_timeout: float,
                 policy: dict[str, Any] | None = None, autorestart: bool = True,
                 logs: argparse.Namespace | None = None) -> None:
        from prun.cluster.options import values_in

        self.command = command
        self.kill_timeout = kill_timeout
        self.policy = dict(values_in([], POLICY), **(policy or {}))
        self.autorestart = autorestart
        self.kill_signal = signal.Signals[self.policy["kill_signal"]]
        self.exit_code = 0
        self.boot_told = False  # a first run that ended too soon was reported (the start fails)
        self.instances = [Instance(i) for i in range(instances)]
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[int] = self.loop.create_future()
        self.busy = asyncio.Lock()
        self.watched: dict[int, Instance] = {}
        self.booted = False  # every instance was spawned once
        self.online = False
        self.generation = 1
        self.control: control.ControlServer | None = None
        self.logs = logs
        self.output: output.OutputRelay | None = None

    def emit(self, event: control.Event) -> None:
        if self.control is not None:
            self.control.publish(event)

    def spawn(self, instance: Instance) -> subprocess.Popen[bytes] | None:
        instance.timer = None
        if self.stopping or instance not in self.instances:
            return None
        env = dict(os.environ, **{self.policy["instance_var"]: str(instance.index)})
        try:
            # an instance dies with its supervisor (a SIGKILLed one leaves none running unmanaged); it leads a
            # process group, which the kill signal goes to (a shell and what it runs, together)
            pipes = self.output_pipes()
            try:
                proc = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent(new_group=True),
                                        stdout=pipes["stdout"][1] if pipes else None,
                                        stderr=pipes["stderr"][1] if pipes else None)
            finally:
                for _, write_end in pipes.values():
                    os.close(write_end)
        except OSError as exc:
            why = f"cannot start instance {instance.index} ({self.command[0]}): {exc.strerror}"
            log(why)
            if not self.booted:  # it cannot run at all: a command that does not exist, a script not executable
                self.emit(control.BootFailed(why))
                self.end(why, errored=True)
            else:
                self.schedule(instance)
            return None
        self.relay_output(instance, proc.pid, pipes)
        instance.proc, instance.started = proc, time.monotonic()
        self.watched[proc.pid] = instance
        log(f"instance {instance.index} (pid {proc.pid}) started")
        self.emit(control.WorkerStarted(instance.index, proc.pid, self.generation))
        return proc

    # ---- output: each instance's own pipes, read by the relay -----------------------------------------

    def start_output(self, under_daemon: bool) -> None:
        """Under the daemon, the instances' lines reach the log writer whole, through the relay."""
        if under_daemon and self.logs is not None:
            self.output = output.for_supervisor(self.loop, self.logs.name, self.logs.log_format,
                                                self.logs.log_json_time, self.logs.log_max_line)

    def output_pipes(self) -> dict[str, tuple[int, int]]:
        """{'stdout' | 'stderr': (read end, write end)} for a new instance; none without a relay."""
        if self.output is None:
            return {}
        pipes: dict[str, tuple[int, int]] = {}
        try:
            for stream in ("stdout", "stderr"):
                pipes[stream] = os.pipe()
        except OSError:
            for ends in pipes.values():
                for fd in ends:
                    os.close(fd)
            raise
        return pipes

    def relay_output(self, instance: Instance, pid: int, pipes: dict[str, tuple[int, int]]) -> None:
        if self.output is not None and pipes:
            self.output.attach({read_end: stream for stream, (read_end, _) in pipes.items()}, instance.index, pid)

    def close_output(self) -> None:
        if self.output is not None:
            self.output.close()
            self.output = None

    def schedule(self, instance: Instance) -> float:
        delay = restart_delay(self.policy["restart_delay"], self.policy["exp_backoff_restart_delay"],
                              instance.failures)
        instance.failures += 1
        instance.timer = self.loop.call_later(delay, self.spawn, instance)
        return delay

    def reap(self) -> None:
        for pid, instance in list(self.watched.items()):
            proc = instance.proc if instance.proc and instance.proc.pid == pid else None
            retired = proc is None
            if proc is None:
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if not done:
                    continue
                code = os.waitstatus_to_exitcode(status) if status else 0
            else:
                result = proc.poll()
                if result is None:
                    continue
                code = result
            del self.watched[pid]
            if retired or self.stopping or instance not in self.instances:
                continue
            instance.proc = None
            self.exited(instance, pid, code)
        reap_adopted(self.watched)  # what an instance left: the supervisor is their subreaper
        if self.stopping and not self.watched and not self.done.done():
            self.done.set_result(self.exit_code)

    def exited(self, instance: Instance, pid: int, code: int) -> None:
        """An instance exited unasked: the restart policy says whether it runs again, or the app ends."""
        up = time.monotonic() - instance.started
        what = f"instance {instance.index} (pid {pid}) {describe(code)}"
        if code in self.policy["stop_exit_codes"] or not self.autorestart:
            instance.finished = True
            why = "one of --stop-exit-codes" if code in self.policy["stop_exit_codes"] else "--no-autorestart"
            log(f"{what}; not restarting it ({why})")
            self.emit(control.WorkerExited(instance.index, pid, self.generation, describe(code)))
            if all(i.finished for i in self.instances):
                self.end(f"{what} ({why})", errored=code != 0 and code not in self.policy["stop_exit_codes"])
            return
        if up >= BACKOFF_RESET_AFTER:
            instance.failures = 0
        instance.unstable = instance.unstable + 1 if up < self.policy["min_uptime"] else 0
        if instance.unstable and not self.boot_told and not self.online:
            self.boot_told = True  # `prun start` says so now; the policy keeps trying meanwhile
            self.emit(control.BootFailed(f"{what} {up:.2f}s after it started"))
        max_restarts = self.policy["max_restarts"]
        if max_restarts and instance.unstable > max_restarts:
            self.end(f"{what}; it ended {instance.unstable} times in a row within --min-uptime "
                     f"({self.policy['min_uptime']:g}s) of starting: giving up (--max-restarts {max_restarts})",
                     errored=True)
            return
        instance.restarts += 1
        delay = self.schedule(instance)
        log(f"{what}; restarting it in {delay:.2f}s")
        self.emit(control.WorkerExited(instance.index, pid, self.generation, describe(code), True, delay))

    def end(self, reason: str, errored: bool) -> None:
        """The policy ends the app: errored (exit 3) or finished (exit 0); the daemon does not restart it."""
        log(f"{'error: ' if errored else ''}{reason}: stopping")
        self.emit(control.Ended(reason, errored))
        self.exit_code = EXIT_GAVE_UP if errored else 0
        self.stop(force=False)

    def check_online(self) -> None:
        """Online once every instance has run for --min-uptime (a command that exits at once never is)."""
        if self.stopping or self.online:
            return
        now = time.monotonic()
        waiting = [i for i in self.instances if i.proc is None or now - i.started < self.policy["min_uptime"]]
        if waiting:
            self.loop.call_later(0.05, self.check_online)
            return
        self.online = True
        log(f"ready: {len(self.instances)} workers of {' '.join(self.command)} (gen 1)")
        self.emit(control.Online(len(self.instances), self.generation))

    async def run(self, control_fd: int | None = None) -> int:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
                       signal.SIGTTOU, signal.SIGCHLD):
            self.loop.add_signal_handler(signum, self.dispatch, signum)
        become_subreaper()
        self.start_output(control_fd is not None)
        if control_fd is not None:
            self.control = control.ControlServer(control_fd, self.loop, self.answer)
            self.control.start()
        for instance in self.instances:
            self.spawn(instance)
        self.booted = True
        self.check_online()
        try:
            return await self.done
        finally:
            if self.control is not None:
                self.control.close()
            self.close_output()

    async def answer(self, request: control.Request) -> control.Reply:
        """A request of the daemon's control channel, answered once done."""
        count = len(self.instances)
        if isinstance(request, control.Status):
            return control.Reply(request.id, True, workers=count, status=self.status())
        if isinstance(request, control.Stop):
            self.stop(force=False)
            return control.Reply(request.id, True, workers=count)
        if self.stopping:
            return control.Reply(request.id, False, "the supervisor is stopping", count)
        if isinstance(request, control.Reload):
            await self.restart_all()
        else:
            while len(self.instances) != max(1, request.count) and not self.stopping:
                await self.scale(+1 if request.count > len(self.instances) else -1)
        return control.Reply(request.id, not self.stopping, "the supervisor is stopping" if self.stopping else "",
                             len(self.instances))

    def status(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "pid": os.getpid(), "booted": self.online, "stopping": self.stopping, "slots": len(self.instances),
            "generation": self.generation, "reloading": self.busy.locked(),
            "workers": [{"slot": i.index, "pid": i.proc.pid, "generation": self.generation, "state": "ready",
                         "uptime": round(now - i.started, 3), "connections": 0, "requests": 0, "rss": 0,
                         "restarts": i.restarts} for i in self.instances if i.proc is not None],
        }

    def dispatch(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self.reap()
        elif signum == signal.SIGHUP:
            self.loop.create_task(self.restart_all())
        elif signum in (signal.SIGTTIN, signal.SIGTTOU):
            self.loop.create_task(self.scale(+1 if signum == signal.SIGTTIN else -1))
        else:
            self.stop(force=signum == signal.SIGQUIT or self.stopping)

    def retire(self, proc: subprocess.Popen[bytes]) -> None:
        """--kill-signal to an instance we no longer want (its process group), SIGKILL after --kill-timeout."""
        if proc.poll() is None:
            _killpg(proc.pid, self.kill_signal)
            self.loop.call_later(self.kill_timeout, self.kill_if_alive, proc)

    @staticmethod
    def kill_if_alive(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            _killpg(proc.pid, signal.SIGKILL)

    async def restart_all(self) -> None:
        async with self.busy:
            if self.stopping:
                return
            began = time.monotonic()
            log(f"reloading: {len(self.instances)} workers")
            self.emit(control.ReloadStarted(self.generation + 1))
            self.generation += 1
            for instance in list(self.instances):
                old = instance.proc
                if old is not None:
                    instance.proc = None  # its exit is a retirement, not a crash
                    self.retire(old)
                    while old.pid in self.watched and old.poll() is None:
                        await asyncio.sleep(0.02)
                if instance.timer:
                    instance.timer.cancel()
                instance.failures = 0
                self.spawn(instance)
            log(f"reload complete: {len(self.instances)} workers in {time.monotonic() - began:.2f}s")
            self.emit(control.ReloadFinished(True, self.generation, len(self.instances)))

    async def scale(self, delta: int) -> None:
        async with self.busy:
            if self.stopping:
                return
            if delta > 0:
                instance = Instance(len(self.instances))
                self.instances.append(instance)
                self.spawn(instance)
                log(f"scaled up to {len(self.instances)} workers")
                self.emit(control.Scaled(len(self.instances)))
            elif len(self.instances) > 1:
                instance = self.instances.pop()
                if instance.timer:
                    instance.timer.cancel()
                if instance.proc:
                    self.retire(instance.proc)
                log(f"scaled down to {len(self.instances)} workers")
                self.emit(control.Scaled(len(self.instances)))
            else:
                log("already at 1 worker; not scaling down")

    def stop(self, force: bool) -> None:
        first = not self.stopping
        self.stopping = True
        if first:
            log(f"stopping: {sum(1 for i in self.instances if i.proc)} workers")
            self.emit(control.Stopping(not force))
        for instance in self.instances:
            if instance.timer:
                instance.timer.cancel()
        for pid, instance in self.watched.items():
            proc = instance.proc if instance.proc and instance.proc.pid == pid else None
            if proc is not None:
                if force:
                    _killpg(proc.pid, signal.SIGKILL)
                else:
                    self.retire(proc)
            else:
                try:
                    os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self.reap()


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `prun start` a fork-mode app's output takes (the daemon passes them from its spec)."""
    from prun.cluster.options import BY_NAME

    for name in ("log_format", "log_json_time", "log_max_line"):
        option = BY_NAME[name]
        parser.add_argument(option.long, type=option.parse, default=option.default)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prun-fork")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--kill-timeout", type=float, default=5.0)
    parser.add_argument("--name", default="")
    parser.add_argument("--control-fd", type=int, default=None)
    parser.add_argument("--no-autorestart", action="store_true")
    add_log_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, policy_args = parser.parse_known_args(argv[:split])  # the rest: options of prun run (POLICY)
    command = argv[split + 1:]
    if not command:
        parser.error("no command given")
    try:
        import setproctitle

        setproctitle.setproctitle(f"prun fork {args.name or command[0]}")
    except ImportError:  # pragma: no cover
        pass

    async def run() -> int:
        from prun.cluster.options import values_in

        supervisor = ForkSupervisor(command, max(1, args.instances), args.kill_timeout,
                                    values_in(policy_args, POLICY), not args.no_autorestart, args)
        return await supervisor.run(args.control_fd)

    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
