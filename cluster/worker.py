"""The master's view of one worker process: spawn it, talk to it, follow its state."""

from __future__ import annotations

import asyncio
import enum
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prun.runtime import channel
from prun.runtime.options import WorkerOptions

# The worker is a fresh interpreter. `-c` puts the current directory first on sys.path: drop it, so
# that nothing in the directory prun was started from can shadow prun's own modules.
_SHIM = "import sys; del sys.path[0]; from prun.runtime.container import main; main()"


TOKEN_VARIABLE = "PRUN_WORKER"


def exit_status(code: int) -> int:
    """A child's status as a shell shows it: its exit code, or 128+N for signal N."""
    return 128 - code if code < 0 else code


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class State(enum.Enum):
    SPAWNING = "spawning"
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    EXITED = "exited"


@dataclass(eq=False)
class WorkerProcess:
    """One worker: its slot, generation, pid, state, channel and live stats."""

    slot: int
    generation: int
    ready: asyncio.Future[bool]  # True when READY, False when it died or failed first
    exited: asyncio.Future[int]  # its exit status, once reaped
    pid: int = 0
    state: State = State.SPAWNING
    started: float = field(default_factory=time.monotonic)
    chan: channel.AsyncChannel | None = None
    conns: int = 0
    requests: int = 0
    rss: int = 0  # resident memory in bytes, from its heartbeat
    rss_ready: int = 0  # ... when it became ready
    rss_told: int = 0  # the size the master last logged (a line at each doubling)
    last_heartbeat: float = field(default_factory=time.monotonic)
    boot_error: str = ""
    boot_traceback: str = ""
    exit_status: int | None = None  # as os.waitstatus_to_exitcode: -N for signal N
    kill_timer: asyncio.TimerHandle | None = None
    aborted: bool = False  # killed by the heartbeat watchdog
    # leastconn: connections handed over but not yet acknowledged, and how many were acknowledged
    inflight: deque[socket.socket] = field(default_factory=deque)
    acked: int = 0
    waiting_since: float = 0.0  # loop time of the oldest hand-off it has not acknowledged (about)
    # leastconn: connections opened in all (from its heartbeats), and the rate measured from them
    opened: int = 0
    rate: float = 0.0  # new connections per second
    rate_since: float = 0.0  # loop time of the heartbeat the rate was last measured from
    rate_opened: int = 0  # `opened` then
    # the read ends of its own stdout, stderr (and access log) pipes, when the master relays its output
    outputs: dict[int, str] = field(default_factory=dict)
    # $PRUN_WORKER in its environment, inherited by what the app starts: whose a process left behind is
    token: str = field(default_factory=lambda: os.urandom(8).hex())

    @property
    def alive(self) -> bool:
        return self.state is not State.EXITED

    def signal(self, signum: int) -> None:
        if self.alive and self.pid:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def describe(self) -> str:
        return f"worker {self.slot} (pid {self.pid}, gen {self.generation})"

    def why_not_ready(self) -> str:
        """Why it did not become ready, in a user's words."""
        if self.boot_error:
            return self.boot_error
        if self.exit_status is not None:
            return f"it {describe_exit(self.exit_status)} before it was ready"
        return "it did not become ready"


def spawn(
    options: WorkerOptions,
    listeners: list[socket.socket],
    loop: asyncio.AbstractEventLoop,
    on_message: Callable[[WorkerProcess, channel.Message, list[int]], None],
    environ: dict[str, str] | None = None,
    capture: bool = False,
    access: bool = False,
) -> WorkerProcess:
    """Start a worker as a fresh interpreter (fork+exec) with only its channel end inherited.

    `capture`: its stdout and stderr are pipes of its own, read by the master's output relay (output.py);
    `access`: its access log too (--access-log-file), on a pipe whose fd it is told in its options."""
    worker = WorkerProcess(options.slot, options.generation, loop.create_future(), loop.create_future())
    master_end, worker_end = channel.pair()
    env = dict(os.environ if environ is None else environ)
    env.update(options.env)
    env["PRUN_CHANNEL_FD"] = str(worker_end.fileno())
    env["PRUN_MASTER_PID"] = str(os.getpid())
    env[TOKEN_VARIABLE] = worker.token
    os.set_inheritable(worker_end.fileno(), True)
    actions = []
    child_ends = []
    if capture:
        for target, stream in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            worker.outputs[read_end] = stream
            child_ends.append(write_end)
            actions.append((os.POSIX_SPAWN_DUP2, write_end, target))
        if access:
            read_end, write_end = os.pipe()
            worker.outputs[read_end] = "access"
            child_ends.append(write_end)
            os.set_inheritable(write_end, True)
            options.access_log_fd = write_end
    try:
        worker.pid = os.posix_spawn(sys.executable, [sys.executable, "-c", _SHIM], env, file_actions=actions)
    except OSError:
        for fd in worker.outputs:
            os.close(fd)
        raise
    finally:
        worker_end.close()
        for fd in child_ends:
            os.close(fd)
    channel.send(master_end, channel.Boot(options=options.to_dict()), fds=[s.fileno() for s in listeners])
    worker.state = State.BOOTING
    worker.chan = channel.AsyncChannel(
        master_end, loop, lambda msg, fds: on_message(worker, msg, fds), lambda: None  # its exit is seen by waitpid
    )
    return worker
