"""The daemon: the app table, one Runner per app, the RPC server and the event bus.

It holds a lock on $PRUN_HOME/daemon.lock for its whole life (a second daemon is refused), adopts the
masters an earlier daemon left running, and answers the commands of cluster/commands/ on rpc.sock.
Operations on one app run one at a time (its lock); different apps proceed in parallel.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from typing import Any

from prun.cluster import control
from prun.cluster.daemon import rpc
from prun.cluster.daemon.app import ERRORED, LAUNCHING, ONLINE, RELOADING, STOPPED, App, Spec
from prun.cluster.daemon.bus import Bus
from prun.cluster.daemon.home import Home, write_private
from prun.cluster.daemon.runner import Runner
from prun.cluster.errors import PrunError

START_TIMEOUT = 120.0  # beyond the app's own --ready-timeout (60 s by default)
RELOAD_TIMEOUT = 600.0  # a reload rolls every worker: each may take --ready-timeout to boot
SCALE_TIMEOUT = 300.0


class God:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.apps: dict[int, App] = {}
        self.runners: dict[int, Runner] = {}
        self.bus = Bus()
        self.children: dict[int, subprocess.Popen[bytes]] = {}  # holders and log writers, reaped when they exit
        self.stopping = False
        self.started = time.time()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stats: Any = None
        self.leave_apps = False  # `prun update`: exit, the apps keep running for the next daemon

    # ---- bookkeeping -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """One line in daemon.log; a full disk or a closed log loses the line, never the operation."""
        try:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)
        except (OSError, ValueError):
            pass

    def publish(self, event: str, app: App, **fields: Any) -> None:
        self.bus.publish(event, app=app.name, id=app.id, status=app.status, **fields)
        self.say(f"{app.name}: {event} {' '.join(f'{k}={v}' for k, v in fields.items() if v is not None)}")

    def persist(self, app: App) -> None:
        """Write the app's record; a disk that refuses it (full, failing) costs a line here, not the operation."""
        if app.id in self.apps:
            try:
                write_private(self.home.record(app.id), app.record())
            except OSError as exc:
                self.say(f"{app.name}: cannot write its record {self.home.record(app.id)}: {exc.strerror or exc}")

    def runner(self, app: App) -> Runner:
        return self.runners[app.id]

    def add(self, app: App) -> App:
        self.apps[app.id] = app
        self.runners[app.id] = Runner(self, app)
        return app

    def resolve(self, target: Any, empty_ok: bool = False) -> list[App]:
        """The apps a command names, each once: `target` is one or a list of `all`, a name, a namespace, an id,
        a /regex/ (searched in names), or a script (as given to start, or its absolute path), tried in that
        order as PM2 does. NO_SUCH_APP if one names no app (`all` too, unless `empty_ok`): nothing is done."""
        targets = target if isinstance(target, list) else [target]
        if not targets:
            raise rpc.RpcError(rpc.NO_SUCH_APP, "no app named")
        found: dict[int, App] = {}
        for each in targets:
            found.update((app.id, app) for app in self._match(str(each), empty_ok))
        return sorted(found.values(), key=lambda a: a.id)

    def _match(self, text: str, empty_ok: bool) -> list[App]:
        apps = list(self.apps.values())
        if text == "all":
            if not apps and not empty_ok:
                raise rpc.RpcError(rpc.NO_SUCH_APP, "no app to act on: prun ls is empty")
            return apps
        if len(text) > 2 and text[0] == text[-1] == "/":
            try:
                pattern = re.compile(text[1:-1])
            except re.error as exc:
                raise rpc.RpcError(rpc.BAD_ARGUMENTS, f"invalid regular expression {text}: {exc}") from None
            found = [a for a in apps if pattern.search(a.name)]
            if not found:
                raise rpc.RpcError(rpc.NO_SUCH_APP, f"no app name matches {text}")
            return found
        found = [a for a in apps if a.name == text] or [a for a in apps if a.spec.namespace == text]
        if not found and text.isdigit() and int(text) in self.apps:
            found = [self.apps[int(text)]]
        if not found:
            found = [a for a in apps if text in (a.spec.target, os.path.join(a.spec.cwd, a.spec.target))
                     or (os.path.isabs(text) and text in a.spec.command[:2])]
        if not found:
            raise rpc.RpcError(rpc.NO_SUCH_APP, f"no app named, numbered or in a namespace {text!r}")
        return found

    def by_name(self, name: str) -> App | None:
        return next((a for a in self.apps.values() if a.name == name), None)

    # ---- operations ------------------------------------------------------------------------------

    async def start(self, spec: Spec, env: dict[str, str]) -> App:
        """A new app, or a stopped or errored one of that name started again with this spec and environment
        (what was typed now, not what was stored); its master online, or START_FAILED."""
        existing = self.by_name(spec.name)
        if existing is not None:
            if existing.status not in (STOPPED, ERRORED):
                raise rpc.RpcError(rpc.ALREADY_RUNNING, f"an app named {spec.name!r} already exists "
                                   f"(id {existing.id}, {existing.status}): prun restart {spec.name}")
            if spec != existing.spec:  # started again with what is given now, as a new start would be
                async with existing.lock:
                    await self._stop_master(existing)
                    if (spec.mode, spec.bind, spec.backlog) != (existing.spec.mode, existing.spec.bind,
                                                                existing.spec.backlog):
                        self.runner(existing).release_listeners()
                    existing.spec, existing.base_env = spec, env
            await self.restart(existing)
            return existing
        app = self.add(App(max(self.apps, default=-1) + 1, spec, env))
        try:
            await self._launch(app)
        finally:
            self.persist(app)  # a failed start stays listed (errored), as PM2 shows it
        return app

    @staticmethod
    async def each(calls: list[Awaitable[Any]]) -> None:
        """One operation per app, all at once, every one waited for: a failure is raised once all are done
        (several: one error naming each), so the others are not left half done behind the reply."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, rpc.RpcError):
                raise result  # a bug: INTERNAL
        failed = [result for result in results if isinstance(result, rpc.RpcError)]
        if len(failed) == 1:
            raise failed[0]
        if failed:
            raise rpc.RpcError(failed[0].code, "; ".join(error.message for error in failed))

    async def _launch(self, app: App) -> None:
        """Start the app's master and wait until it is online (START_FAILED if it exits or takes too long)."""
        try:
            run = self.runner(app).spawn()
        except PrunError as exc:
            app.status, app.last_error = ERRORED, str(exc)
            self.publish("errored", app, reason=app.last_error)
            raise rpc.RpcError(rpc.START_FAILED, f"{app.name}: {exc}") from None
        try:
            online = await asyncio.wait_for(asyncio.shield(run.online), START_TIMEOUT)
        except asyncio.TimeoutError:
            raise rpc.RpcError(rpc.START_FAILED, f"{app.name} is not online after {START_TIMEOUT:g}s "
                               f"(prun logs {app.name})") from None
        if not online:  # it exited, or says it cannot come online: is it tried again?
            reason = run.failure or app.last_error
            await asyncio.wait([run.exited], timeout=1.0)
            if run.ended is not None and not run.ended.errored and app.status == STOPPED:
                return  # done already, and well (--no-autorestart: a job that ran and exited 0): no failure
            retry = " (retrying with backoff)" if app.status in (LAUNCHING, ONLINE) else ""
            raise rpc.RpcError(rpc.START_FAILED, f"{app.name} could not start: {reason}"
                               f"{retry}; see prun logs {app.name}")

    async def stop(self, app: App, release: bool = True) -> None:
        async with app.lock:
            await self._stop_master(app)
            if release:
                self.runner(app).release_listeners()
            if app.status != STOPPED:
                app.status, app.workers = STOPPED, 0
                self.publish("stopped", app)
            self.persist(app)

    async def _stop_master(self, app: App) -> None:
        try:
            await self.runner(app).stop_master()
        except PrunError as exc:
            raise rpc.RpcError(rpc.START_FAILED, str(exc)) from None

    async def restart(self, app: App, env: dict[str, str] | None = None, update: dict[str, str] | None = None
                      ) -> None:
        """Exactly stop then start, with the stored arguments, whatever the app's state; the sockets stay open."""
        async with app.lock:
            await self._stop_master(app)
            if env is not None:
                app.base_env = env
            if update:
                app.spec.env.update(update)
            app.failures = app.unstable = 0
            if app.status != STOPPED:
                app.restarts += 1
            await self._launch(app)
            self.persist(app)

    async def reload(self, app: App) -> str:
        """The master's rolling reload, answered with its outcome; a stopped or errored app is started instead."""
        async with app.lock:
            runner = self.runner(app)
            if app.status not in (ONLINE, RELOADING):
                await self._stop_master(app)
                await self._launch(app)
                return "started"
            try:
                reply = await runner.request(control.Reload, RELOAD_TIMEOUT)
            except PrunError as exc:
                raise rpc.RpcError(rpc.START_FAILED, f"reload failed: {exc}") from None
            self.persist(app)
            if not reply.ok:
                raise rpc.RpcError(rpc.START_FAILED, f"{app.name}: reload failed: {reply.reason}")
            return "reloaded"

    async def scale(self, app: App, count: str) -> int:
        async with app.lock:
            if app.status not in (ONLINE, RELOADING):
                raise rpc.RpcError(rpc.NOT_RUNNING, f"{app.name} is {app.status}: only an online app can scale")
            wanted = app.workers + int(count) if count.startswith(("+", "-")) else int(count)
            try:
                reply = await self.runner(app).request(control.Scale, SCALE_TIMEOUT, count=max(1, wanted))
            except PrunError as exc:
                raise rpc.RpcError(rpc.START_FAILED, str(exc)) from None
            app.workers = reply.workers
            app.spec.instances = str(app.workers)
            self.persist(app)
            if not reply.ok:
                raise rpc.RpcError(rpc.START_FAILED, f"{app.name}: {reply.reason}")
            return app.workers

    async def delete(self, app: App) -> None:
        await self.stop(app)
        self.apps.pop(app.id, None)
        self.runners.pop(app.id, None)
        for path in (self.home.record(app.id), self.home.control_socket(app.id)):
            try:
                os.unlink(path)
            except OSError:
                pass
        self.publish("deleted", app)

    # ---- the daemon's life -----------------------------------------------------------------------

    def adopt_all(self) -> None:
        """Read every app record; adopt running masters, start again those meant to run that died meanwhile."""
        from prun.cluster.daemon.app import checked_record
        from prun.cluster.daemon.jsonload import loads

        for name in sorted(os.listdir(self.home.apps)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.home.apps, name)
            try:
                with open(path, "rb") as fh:
                    app = self.add(App.from_record(checked_record(loads(fh.read()), f"the app record {path}", self.say)))
            except (OSError, ValueError, KeyError, TypeError, PrunError) as exc:
                self.say(f"ignoring {exc}" if isinstance(exc, PrunError) else f"ignoring the app record {path}: {exc}")
                continue
            runner = self.runner(app)
            if runner.adopt():
                self.say(f"{app.name}: adopted master {app.pid}")
            elif app.status in (ONLINE, LAUNCHING) and app.spec.autorestart:
                app.status = LAUNCHING
                runner.schedule_restart("its master was gone when the daemon started")
            elif app.status != STOPPED:
                app.status, app.pid = STOPPED, 0
            self.persist(app)

    async def kill(self) -> None:
        """Stop every app gracefully (all at once), then the daemon."""
        self.stopping = True
        apps = list(self.apps.values())
        self.bus.publish("daemon_stopping", apps=len(apps))
        await asyncio.gather(*(self.delete(app) for app in apps), return_exceptions=True)
        self.loop_exit()

    def loop_exit(self) -> None:
        """End the daemon shortly: after the reply to the command that asked has been written."""
        asyncio.get_running_loop().call_later(0.05, self._exit)

    def _exit(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def handle(self, command: str, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        from prun.cluster.commands import RPC_COMMANDS

        module_name = RPC_COMMANDS.get(command)
        if module_name is None:
            raise rpc.RpcError(rpc.UNKNOWN_COMMAND, f"unknown command {command!r}")
        if self.stopping and command not in ("ping", "list"):
            raise rpc.RpcError(rpc.SHUTTING_DOWN, "the daemon is stopping")
        module = importlib.import_module(f"prun.cluster.commands.{module_name}")
        return await module.execute(self, args, writer)

    def reap(self) -> None:
        """Collect the exit status of holders and log writers (each runner's pidfd watch then forgets them)."""
        for proc in list(self.children.values()):
            proc.poll()

    def views(self, apps: list[App] | None = None) -> list[dict[str, Any]]:
        """The rows of `prun ls`, with cpu and memory (psutil is imported here, on first use)."""
        if self.stats is None:
            from prun.cluster.daemon.stats import Stats

            self.stats = Stats()
        chosen = apps if apps is not None else sorted(self.apps.values(), key=lambda a: a.id)
        return [self.stats.view(app) for app in chosen]


def take_lock(home: Home) -> int:
    fd = os.open(home.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = home.daemon_pid()
        raise PrunError(f"a prun daemon already runs on {home.path} (pid {pid}); refusing to start a second one"
                        ) from None
    return fd


async def serve(home: Home) -> None:
    from prun.cluster.daemon.rpcserver import RpcServer

    god = God(home)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGCHLD, god.reap)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: loop.create_task(god.kill()))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    god.adopt_all()
    if os.path.exists(home.rpc):
        os.unlink(home.rpc)  # stale: we hold the lock, so no daemon answers there
    server = RpcServer(home.rpc, god.handle, god.say)
    server.start()
    with open(home.pid_file, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    god.say(f"daemon {os.getpid()} serving {home.rpc} ({len(god.apps)} apps)")
    try:
        await god.done
    finally:
        server.close()
        god.bus.close()
        for runner in god.runners.values():
            runner.unwatch()
        for path in (home.rpc, home.pid_file):
            try:
                os.unlink(path)
            except OSError:
                pass
        god.say("daemon exiting" + (" (the apps keep running)" if god.leave_apps else ""))


def main() -> None:
    home = Home.from_environ()
    os.umask(0o077)
    try:
        home.ensure()
        lock = take_lock(home)
    except PrunError as exc:
        print(f"prun: error: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    try:
        import setproctitle

        setproctitle.setproctitle(f"prun daemon {home.path}")
    except ImportError:  # pragma: no cover
        pass
    try:
        asyncio.run(serve(home))
    finally:
        os.close(lock)
