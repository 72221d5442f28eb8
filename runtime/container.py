"""The container shim: the program every worker runs (`python -c` ... `prun.runtime.container.main()`).

It receives its listeners over the control channel, imports the user's app, serves it with the
right server, reports READY (or why it could not boot), heartbeats, and drains when told.
"""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import os
import signal
import socket
import stat
import sys
import traceback
from typing import TYPE_CHECKING, Any

from prun.runtime import channel, loader, output
from prun.runtime.options import EXIT_BOOT_FAILURE, WorkerOptions
from prun.runtime.server import BootError, Server

if TYPE_CHECKING:
    from prun.runtime.hooks import WorkerHooks

PR_SET_PDEATHSIG = 1
# How long a worker whose master vanished keeps finishing in-flight work.
ORPHAN_DRAIN_SECONDS = 1.0


def die_with_parent(master_pid: int) -> None:
    """Ask the kernel to kill this worker when the master dies, and check it has not died already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if master_pid and os.getppid() != master_pid:
        os._exit(1)


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory (0 if unknown); read once per heartbeat, not per report."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def listening_fds() -> list[int]:
    """Every listening socket this process holds (the servers may hold duplicates of the listeners)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                found.append(fd)
        except OSError:
            pass
        finally:
            sock.detach()
    return found


def forget_in_forked_children(channel_fd: int) -> None:
    """A child the app forks (os.fork, multiprocessing) must not keep the listeners or the channel.

    It would keep the port bound after the service is gone. Exec'd children never get them: they are
    close-on-exec. The fds are replaced by /dev/null rather than closed, so that the child's copies of
    the socket objects close /dev/null one day, never an fd the child opened since.
    """
    def after_in_child() -> None:
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
        except OSError:
            return
        for fd in [channel_fd, *listening_fds()]:
            try:
                os.dup2(devnull, fd, inheritable=False)
            except OSError:
                pass
        os.close(devnull)

    os.register_at_fork(after_in_child=after_in_child)


_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


def user_traceback(exc: BaseException) -> str:
    """The traceback of an app's start-up failure, without prun's and importlib's own frames."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = [
        f for f in tb.stack
        if not (f.filename.startswith(("<frozen", _OWN_DIR)) or os.sep + "importlib" + os.sep in f.filename)
    ]
    if not frames:
        return ""
    tb.stack = traceback.StackSummary.from_list(frames)
    return "".join(tb.format())


def make_server(app: Any, interface: str, options: WorkerOptions, loop: asyncio.AbstractEventLoop) -> Server:
    """The server for an interface; the HTTP one is imported only when needed."""
    if interface in ("asgi", "wsgi"):
        from prun.runtime.http import make_http_server

        return make_http_server(app, interface, options, loop)
    if interface == "stream":
        from prun.runtime.stream import StreamServer

        return StreamServer(app, options, loop)
    if interface == "protocol":
        from prun.runtime.stream import ProtocolServer

        return ProtocolServer(app, options, loop)
    raise BootError(f"unknown interface {interface!r} (choose from {', '.join(loader.INTERFACES)})")


class Worker:
    """One worker's life: boot, serve, heartbeat, drain."""

    def __init__(self, sock: socket.socket, options: WorkerOptions, listeners: list[socket.socket],
                 outputs: list[output.GuardedOutput] | None = None) -> None:
        self.sock = sock
        self.outputs = outputs or []  # fds 1 and 2 as the app's prints reach them (output.py)
        self.options = options
        self.listeners = listeners
        self.server: Server | None = None
        self.chan: channel.AsyncChannel | None = None
        self.done: asyncio.Future[None] | None = None
        self.draining = False
        self.recycle_asked = False
        self.accepted = 0  # connections handed over by the master (leastconn)
        self.direct = False  # leastconn: the master said this worker accepts on the listeners itself
        self.opened = 0  # connections opened in all (told to the master, which measures the rate)
        self.open_now = 0  # connections open at the last change
        self.switching: asyncio.Task[None] | None = None  # _switch_accepting, while it runs
        self.report_scheduled = False
        self.rss = 0
        self.hooks: WorkerHooks | None = None  # a gunicorn config file's post_worker_init and worker_exit

    def run(self) -> int:
        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self.server = self.boot(loop)
        except BootError as exc:
            self.boot_failed(str(exc), exc.__cause__)
            return exc.exit_code
        except BaseException as exc:  # anything the app's start-up raised
            self.boot_failed(f"{type(exc).__name__}: {exc}", exc)
            return EXIT_BOOT_FAILURE
        self.done = loop.create_future()
        if self.options.balance == "leastconn":
            self.server.on_change = self.connections_changed
        self.chan = channel.AsyncChannel(self.sock, loop, self.on_message, self.on_master_gone)
        self.chan.send(channel.Ready(pid=os.getpid(), rss=resident_bytes()))
        loop.add_signal_handler(signal.SIGTERM, self.start_drain, self.options.graceful_timeout)
        loop.add_signal_handler(signal.SIGQUIT, os._exit, 0)
        loop.call_later(self.options.heartbeat_interval, self.heartbeat)
        loop.run_until_complete(self.done)
        if self.hooks is not None:
            self.hooks.exiting()
        return 0

    def boot(self, loop: asyncio.AbstractEventLoop) -> Server:
        opts = self.options
        os.environ.update(opts.env)
        if opts.hooks_file:  # a gunicorn config file with post_worker_init or worker_exit (runtime/hooks.py)
            from prun.runtime.hooks import WorkerHooks

            self.hooks = WorkerHooks(opts.hooks_file, os.getpid(), os.getppid(), opts.slot, opts.generation,
                                     opts.log_level)
        app, interface = loader.resolve(loader.load(opts.app, opts.chdir, opts.factory), opts.interface, opts.app,
                                        self.warn)
        server = make_server(app, interface, opts, loop)
        server.request_limit = opts.max_requests
        server.on_limit = self.ask_recycle
        loop.run_until_complete(server.startup())
        if self.hooks is not None:
            self.hooks.initialized(app)
        # leastconn: the master accepts, and says when this worker should accept itself (channel.Accept)
        loop.run_until_complete(server.serve(self.listeners if opts.balance != "leastconn" else []))
        for fd in listening_fds():  # a server may serve a duplicate: that one must not reach exec'd children either
            os.set_inheritable(fd, False)
        return server

    def warn(self, message: str) -> None:
        """A warning about the app, printed by the first worker of each generation only (not once per worker),
        and not under --log-level error."""
        if self.options.slot == 0 and self.options.log_level != "error":
            print(f"prun: warning: {message}", file=sys.stderr, flush=True)

    def boot_failed(self, message: str, cause: BaseException | None) -> None:
        tb = user_traceback(cause) if cause is not None else ""
        try:
            channel.send(self.sock, channel.BootFailure(message=message, traceback=tb[-16000:]))
        except OSError:
            print(f"prun worker: {message}", file=sys.stderr)

    def report(self) -> None:
        assert self.server is not None and self.chan is not None
        self.report_scheduled = False
        self.chan.send(channel.Heartbeat(conns=self.server.connections, requests=self.server.requests,
                                         accepted=self.accepted, rss=self.rss, opened=self.opened))

    def connections_changed(self) -> None:
        """leastconn: the master balances on these counts, unless this worker accepts on the listeners
        itself (then the heartbeat tells them)."""
        assert self.server is not None
        now = self.server.connections
        if now > self.open_now:
            self.opened += now - self.open_now
        self.open_now = now
        if not self.direct:
            self.schedule_report()

    def schedule_report(self) -> None:
        """leastconn: tell the master about connection changes, once per loop iteration at most."""
        if not self.report_scheduled and self.server is not None:
            self.report_scheduled = True
            self.server.loop.call_soon(self.report)

    def heartbeat(self) -> None:
        assert self.server is not None
        self.rss = resident_bytes()
        self.report()
        self.server.loop.call_later(self.options.heartbeat_interval, self.heartbeat)

    def ask_recycle(self) -> None:
        if not self.recycle_asked and self.chan is not None:
            self.recycle_asked = True
            self.chan.send(channel.Recycle(requests=self.server.requests if self.server else 0))

    def on_message(self, msg: channel.Message, fds: list[int]) -> None:
        if isinstance(msg, channel.Conn):
            # Counted even when its fd did not arrive (this worker is out of fds: the kernel drops
            # it): the master then closes its copy instead of keeping it, and the client is told.
            self.accepted += 1
            if fds and self.server is not None:
                self.server.accept(socket.socket(fileno=fds.pop(0)))
            self.schedule_report()
        elif isinstance(msg, channel.Accept):
            self.direct = msg.on
            if not msg.on:
                self.schedule_report()  # the master balances on this count again: it must be fresh
            if self.server is not None and self.switching is None:
                self.switching = self.server.loop.create_task(self._switch_accepting())
        elif isinstance(msg, channel.LogFile) and fds:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fds[0], 1)
            os.dup2(fds[0], 2)
            output.reopened(self.outputs)
        elif isinstance(msg, channel.Drain):
            if self.server is not None:
                self.server.going_away = msg.stopping
            self.start_drain(msg.timeout)
        for fd in fds:
            os.close(fd)

    async def _switch_accepting(self) -> None:
        """Follow the master's latest Accept until the server does as told (never again once draining)."""
        assert self.server is not None
        try:
            while self.server.accepting != (self.direct and not self.draining and bool(self.listeners)):
                if self.server.accepting:
                    self.server.stop_accepting()
                else:
                    await self.server.start_accepting(self.listeners)
        except OSError as exc:  # out of fds: connections wait in the kernel's queue for the next worker
            print(f"prun worker: cannot accept on the listeners: {exc}", file=sys.stderr)
        finally:
            self.switching = None

    def on_master_gone(self) -> None:
        if self.server is not None:
            self.server.going_away = True
        self.start_drain(ORPHAN_DRAIN_SECONDS)

    def start_drain(self, timeout: float) -> None:
        if self.draining or self.server is None:
            return
        self.draining = True
        self.server.loop.create_task(self._drain(timeout))

    async def _drain(self, timeout: float) -> None:
        assert self.server is not None and self.done is not None
        try:
            await self.server.settle()  # a connection handed over just before the drain is served too
            await self.server.drain(timeout)
        finally:
            if not self.done.done():
                self.done.set_result(None)


def main() -> None:
    outputs = output.install()  # line-buffered; a broken log pipe drops the app's prints, never raises
    fd = int(os.environ.pop("PRUN_CHANNEL_FD"))
    master_pid = int(os.environ.pop("PRUN_MASTER_PID", "0"))
    die_with_parent(master_pid)
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    try:
        msg, fds = channel.recv(sock)
    except (OSError, channel.ProtocolError):
        os._exit(1)
    if not isinstance(msg, channel.Boot):
        os._exit(1)
    options = WorkerOptions.from_dict(msg.options)
    if options.log_format == "json":
        output.use_json(options.log_json_time)  # an app's exception: one record, not a line per traceback line
    listeners = [socket.socket(fileno=f) for f in fds]
    forget_in_forked_children(fd)
    try:
        import setproctitle

        title = f"prun worker {options.slot} {options.name or options.app} gen {options.generation}"
        setproctitle.setproctitle(title)  # --name, as PM2 and `prun ls` call the app
    except ImportError:
        pass
    faulthandler.enable()  # SIGABRT from the master's heartbeat watchdog prints the stuck stack
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the master decides
    code = Worker(sock, options, listeners, outputs).run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait on threads the app may have left behind


if __name__ == "__main__":
    main()
