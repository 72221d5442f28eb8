"""Fork mode: the supervisor of an app that is a command or a script (no listener), one per app.

    python -m prun.cluster.daemon.forkmode --instances N [--kill-timeout S] [--control-fd FD]
        [OPTIONS OF prun run] -- COMMAND [ARG]...

It plays the master's part for processes prun does not serve: it keeps N copies of COMMAND running
(each with its number 0..N-1 in --instance-var), each in a process group of its own, and follows the
master's restart policy (--max-restarts, --min-uptime, --restart-delay, --exp-backoff-restart-delay,
--stop-exit-codes, --no-autorestart). It answers the master's signals: HUP restarts the instances one by
one, TTIN/TTOU add or remove one, TERM/INT stop them all: --kill-signal (SIGINT, as PM2) to each
instance's process group, then SIGKILL after --kill-timeout to what is left of the group (groups.py: also
the leftovers of an instance that ended), and it exits once every group is empty. --watch and
--cron-restart restart the instances one by one, --max-memory-restart one whose process group grew past
it; --pid-file holds its pid. It is online once every instance has run for --min-uptime. Under the daemon it speaks the master's control channel (cluster/control.py): the same
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

from prun.cluster import control, output, pidfile
from prun.cluster.daemon.groups import Groups, memory
from prun.cluster.daemon.tree import die_with_parent, reap_adopted
from prun.cluster.errors import PrunError
from prun.cluster.log import plural
from prun.cluster.supervision import become_subreaper, restart_delay
from prun.cluster.worker import describe_exit as describe

BACKOFF_RESET_AFTER = 30.0
EXIT_GAVE_UP = 3  # as a master whose workers cannot run
POLICY = ("max_restarts", "min_uptime", "restart_delay", "exp_backoff_restart_delay", "stop_exit_codes",
          "instance_var", "kill_signal", "autorestart")
RECYCLING = ("max_memory_restart", "watch", "ignore_watch", "cron_restart", "pid_file")
MEMORY_INTERVAL = 1.0  # seconds between two looks at the instances' memory (a master's workers: a heartbeat)
STOP_POLL = 0.05  # seconds between two looks at what is left of the instances' groups, while stopping


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
                 policy: dict[str, Any] | None = None, logs: argparse.Namespace | None = None) -> None:
        from prun.cluster.options import values_in

        self.command = command
        self.kill_timeout = kill_timeout
        self.policy = dict(values_in([], POLICY + RECYCLING), **(policy or {}))
        self.autorestart = self.policy["autorestart"]
        self.kill_signal = signal.Signals[self.policy["kill_signal"]]
        self.loop = asyncio.get_running_loop()
        self.groups = Groups(self.loop, self.kill_signal, kill_timeout)
        self.tasks: set[asyncio.Task[None]] = set()
        self.exit_code = 0
        self.boot_told = False  # a first run that ended too soon was reported (the start fails)
        self.instances = [Instance(i) for i in range(instances)]
        self.stopping = False
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
        self.groups.forget(proc.pid)  # an old group of this id, if one was being ended, is gone: not this one
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

    def finish_when_gone(self) -> None:
        """While stopping: done once no instance is left, nor any process in their groups (a look every 50 ms)."""
        if self.done.done():
            return
        if not self.watched and not self.groups.left():
            self.done.set_result(self.exit_code)
        else:
            self.loop.call_later(STOP_POLL, self.finish_when_gone)

    def exited(self, instance: Instance, pid: int, code: int) -> None:
        """An instance exited unasked: the restart policy says whether it runs again, or the app ends."""
        self.groups.end(pid)  # what it started and left behind in its group
        up = time.monotonic() - instance.started
        what = f"instance {instance.index} (pid {pid}) {describe(code)}"
        if code in self.policy["stop_exit_codes"] or not self.autorestart:
            instance.finished = True
            why = "one of --stop-exit-codes" if code in self.policy["stop_exit_codes"] else "--no-autorestart"
            log(f"{what}; not restarting it ({why})")
            self.emit(control.WorkerExited(instance.index, pid, self.generation, f"{describe(code)} ({why})",
                                           finished=True))
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
        """Online once every instance has run for --min-uptime (a command that exits at once never is), but
        those --no-autorestart (or --stop-exit-codes) left finished: the others are the app."""
        if self.stopping or self.online:
            return
        now = time.monotonic()
        running = [i for i in self.instances if not i.finished]
        waiting = [i for i in running if i.proc is None or now - i.started < self.policy["min_uptime"]]
        if waiting or not running:
            self.loop.call_later(0.05, self.check_online)
            return
        self.online = True
        log(f"ready: {plural(len(running), 'worker')} of {' '.join(self.command)} (gen 1)")
        self.emit(control.Online(len(running), self.generation))

    async def run(self, control_fd: int | None = None) -> int:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
                       signal.SIGTTOU, signal.SIGCHLD):
            self.loop.add_signal_handler(signum, self.dispatch, signum)
        become_subreaper()
        self.start_output(control_fd is not None)
        if control_fd is not None:
            self.control = control.ControlServer(control_fd, self.loop, self.answer)
            self.control.start()
        pid_file = self.policy["pid_file"]
        try:
            if pid_file:
                pidfile.write(pid_file)
        except PrunError as exc:
            log(f"error: {exc}")
            self.emit(control.BootFailed(str(exc)))
            return exc.code
        for instance in self.instances:
            self.spawn(instance)
        self.booted = True
        self.check_online()
        self.start_recycling()
        try:
            return await self.done
        finally:
            for task in list(self.tasks):
                task.cancel()
            if pid_file:
                pidfile.remove(pid_file)
            if self.control is not None:
                self.control.close()
            self.close_output()

    # ---- restarts nobody typed: --watch, --cron-restart, --max-memory-restart -------------------------

    def start_recycling(self) -> None:
        from prun.cluster.log import Log
        from prun.cluster.options import Config
        from prun.cluster.recycling import start_reloads

        config = Config(**{name: self.policy[name] for name in ("watch", "ignore_watch", "cron_restart")})
        for task in start_reloads(config, Log(), self.request_restart):
            self.keep(task)
        if self.policy["max_memory_restart"]:
            self.keep(self.loop.create_task(self.watch_memory(self.policy["max_memory_restart"])))

    def keep(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def request_restart(self) -> None:
        """Restart the instances one by one (as HUP does), after the restart or scale under way."""
        self.keep(self.loop.create_task(self.restart_all()))

    async def watch_memory(self, limit: int) -> None:
        """An instance whose process group uses more than `limit` bytes is restarted, and says so."""
        from prun.cluster.recycling import megabytes

        while not self.stopping:
            await asyncio.sleep(MEMORY_INTERVAL)
            running = {i.proc.pid: i for i in self.instances if i.proc is not None and self.online}
            for pid, used in memory(running).items():
                instance = running[pid]
                if used <= limit or self.stopping or instance.proc is None or instance.proc.pid != pid:
                    continue
                log(f"instance {instance.index} (pid {pid}) uses {megabytes(used)} of memory, over "
                    f"--max-memory-restart ({used} > {limit} bytes): restarting it")
                self.emit(control.MemoryLimit(instance.index, pid, used, limit))
                instance.restarts += 1
                async with self.busy:
                    if instance.proc is not None and instance.proc.pid == pid:
                        await self.replace(instance)

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
            await self.refill()
            while len(self.instances) != max(1, request.count) and not self.stopping:
                await self.scale(+1 if request.count > len(self.instances) else -1)
        return control.Reply(request.id, not self.stopping, "the supervisor is stopping" if self.stopping else "",
                             len(self.instances))

    def status(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "pid": os.getpid(), "booted": self.online, "stopping": self.stopping, "slots": len(self.instances),
            "finished": [i.index for i in self.instances if i.finished],
            "generation": self.generation, "reloading": self.busy.locked(),
            "workers": [{"slot": i.index, "pid": i.proc.pid, "generation": self.generation, "state": "ready",
                         "uptime": round(now - i.started, 3), "connections": 0, "requests": 0, "rss": 0,
                         "restarts": i.restarts} for i in self.instances if i.proc is not None],
        }

    def dispatch(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self.reap()
        elif signum == signal.SIGHUP:
            self.request_restart()
        elif signum in (signal.SIGTTIN, signal.SIGTTOU):
            self.loop.create_task(self.scale(+1 if signum == signal.SIGTTIN else -1))
        else:
            self.stop(force=signum == signal.SIGQUIT or self.stopping)

    def retire(self, proc: subprocess.Popen[bytes]) -> None:
        """--kill-signal to an instance we no longer want (its process group), SIGKILL after --kill-timeout."""
        self.groups.end(proc.pid)

    async def restart_all(self) -> None:
        async with self.busy:
            if self.stopping:
                return
            began = time.monotonic()
            log(f"reloading: {plural(len(self.instances), 'worker')}")
            self.emit(control.ReloadStarted(self.generation + 1))
            self.generation += 1
            for instance in list(self.instances):
                await self.replace(instance)
            log(f"reload complete: {plural(len(self.instances), 'worker')} in {time.monotonic() - began:.2f}s")
            self.emit(control.ReloadFinished(True, self.generation, len(self.instances)))

    async def replace(self, instance: Instance) -> None:
        """Restart one instance we asked to (a reload, --max-memory-restart): it ends, then starts anew."""
        old = instance.proc
        if old is not None:
            instance.proc = None  # its exit is a retirement, not a crash
            self.retire(old)
            while old.pid in self.watched and old.poll() is None:
                await asyncio.sleep(0.02)
        if instance.timer:
            instance.timer.cancel()
        instance.failures = 0
        instance.finished = False
        self.spawn(instance)

    async def refill(self) -> None:
        """Start again the instances the policy left finished (a scale asks for that many running)."""
        async with self.busy:
            for instance in [i for i in self.instances if i.finished and not self.stopping]:
                await self.replace(instance)

    async def scale(self, delta: int) -> None:
        async with self.busy:
            if self.stopping:
                return
            if delta > 0:
                instance = Instance(len(self.instances))
                self.instances.append(instance)
                self.spawn(instance)
                log(f"scaled up to {plural(len(self.instances), 'worker')}")
                self.emit(control.Scaled(len(self.instances)))
            elif len(self.instances) > 1:
                instance = self.instances.pop()
                if instance.timer:
                    instance.timer.cancel()
                if instance.proc:
                    self.retire(instance.proc)
                log(f"scaled down to {plural(len(self.instances), 'worker')}")
                self.emit(control.Scaled(len(self.instances)))
            else:
                log("already at 1 worker; not scaling down")

    def stop(self, force: bool) -> None:
        """The kill signal to every instance's group (SIGKILL when `force`); done once all are empty."""
        first = not self.stopping
        self.stopping = True
        if first:
            log(f"stopping: {plural(sum(1 for i in self.instances if i.proc), 'worker')}")
            self.emit(control.Stopping(not force))
        for instance in self.instances:
            if instance.timer:
                instance.timer.cancel()
        for pid, instance in self.watched.items():
            if instance.proc and instance.proc.pid == pid:
                self.retire(instance.proc)  # (one retired earlier is being ended already)
        if force:
            self.groups.kill()
        self.reap()
        if first:
            self.finish_when_gone()


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
                                    values_in(policy_args, POLICY + RECYCLING), args)
        return await supervisor.run(args.control_fd)

    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
