"""Fork mode: the supervisor of an app that is a command or a script (no listener), one per app.

    python -m prun.cluster.daemon.forkmode --instances N [--kill-timeout S] -- COMMAND [ARG]...

It plays the master's part for processes prun does not serve: it keeps N copies of COMMAND running
(each with PRUN_INSTANCE=0..N-1), restarts one that exits with the workers' backoff (100 ms x 1.5, capped
at 15 s, reset after 30 s up), and answers the master's signals: HUP restarts the instances one by one,
TTIN/TTOU add or remove one, TERM/INT stop them all (TERM, then KILL after --kill-timeout). Its lines are
the master's ("prun: ready: ...", "prun: reload complete: ...") so the daemon reads both the same way.
Instances share the supervisor's stdout and stderr (the app's log files).
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

from prun.cluster.worker import describe_exit as describe

BACKOFF_FIRST = 0.1
BACKOFF_FACTOR = 1.5
BACKOFF_CAP = 15.0
BACKOFF_RESET_AFTER = 30.0


def log(message: str) -> None:
    print(f"prun: {message}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class Instance:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restarts: int = 0
    timer: asyncio.TimerHandle | None = None
    retiring: bool = False


class ForkSupervisor:
    def __init__(self, command: list[str], instances: int, kill_timeout: float) -> None:
        self.command = command
        self.kill_timeout = kill_timeout
        self.instances = [Instance(i) for i in range(instances)]
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[int] = self.loop.create_future()
        self.busy = asyncio.Lock()
        self.watched: dict[int, Instance] = {}

    def spawn(self, instance: Instance) -> subprocess.Popen[bytes] | None:
        instance.timer = None
        if self.stopping or instance not in self.instances:
            return None
        env = dict(os.environ, PRUN_INSTANCE=str(instance.index))
        try:
            proc = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log(f"cannot start instance {instance.index} ({self.command[0]}): {exc.strerror}")
            self.schedule(instance)
            return None
        instance.proc, instance.started = proc, time.monotonic()
        self.watched[proc.pid] = instance
        log(f"instance {instance.index} (pid {proc.pid}) started")
        return proc

    def schedule(self, instance: Instance) -> float:
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * BACKOFF_FACTOR**instance.failures)
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
            if time.monotonic() - instance.started >= BACKOFF_RESET_AFTER:
                instance.failures = 0
            instance.restarts += 1
            delay = self.schedule(instance)
            log(f"instance {instance.index} (pid {pid}) {describe(code)}; restarting it in {delay:.2f}s")
        if self.stopping and not self.watched and not self.done.done():
            self.done.set_result(0)

    async def run(self) -> int:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
                       signal.SIGTTOU, signal.SIGCHLD):
            self.loop.add_signal_handler(signum, self.dispatch, signum)
        for instance in self.instances:
            self.spawn(instance)
        log(f"ready: {len(self.instances)} workers of {' '.join(self.command)} (gen 1)")
        return await self.done

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
        """TERM a process we no longer want, KILL it after --kill-timeout."""
        if proc.poll() is None:
            proc.terminate()
            self.loop.call_later(self.kill_timeout, self.kill_if_alive, proc)

    @staticmethod
    def kill_if_alive(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()

    async def restart_all(self) -> None:
        async with self.busy:
            if self.stopping:
                return
            began = time.monotonic()
            log(f"reloading: {len(self.instances)} workers")
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

    async def scale(self, delta: int) -> None:
        async with self.busy:
            if self.stopping:
                return
            if delta > 0:
                instance = Instance(len(self.instances))
                self.instances.append(instance)
                self.spawn(instance)
                log(f"scaled up to {len(self.instances)} workers")
            elif len(self.instances) > 1:
                instance = self.instances.pop()
                if instance.timer:
                    instance.timer.cancel()
                if instance.proc:
                    self.retire(instance.proc)
                log(f"scaled down to {len(self.instances)} workers")
            else:
                log("already at 1 worker; not scaling down")

    def stop(self, force: bool) -> None:
        first = not self.stopping
        self.stopping = True
        if first:
            log(f"stopping: {sum(1 for i in self.instances if i.proc)} workers")
        for instance in self.instances:
            if instance.timer:
                instance.timer.cancel()
        for pid, instance in self.watched.items():
            proc = instance.proc if instance.proc and instance.proc.pid == pid else None
            if proc is not None:
                if force:
                    proc.kill()
                else:
                    self.retire(proc)
            else:
                try:
                    os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self.reap()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prun-fork")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--kill-timeout", type=float, default=5.0)
    parser.add_argument("--name", default="")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        import setproctitle

        setproctitle.setproctitle(f"prun fork {args.name or command[0]}")
    except ImportError:  # pragma: no cover
        pass

    async def run() -> int:
        return await ForkSupervisor(command, max(1, args.instances), args.kill_timeout).run()

    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
