"""One app as the daemon keeps it: what `start` was given (Spec, spec.py), its state and pids (App), its record.

The record ($PRUN_HOME/apps/<id>.json) is what lets a later daemon adopt the app's running master;
runner.py starts and watches the processes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from prun.cluster.daemon import schema
from prun.cluster.daemon.schema import INTEGER, VARIABLES
from prun.cluster.daemon.spec import Spec

__all__ = ["App", "Spec", "checked_record"]

ONLINE, LAUNCHING, STOPPING, STOPPED, ERRORED = "online", "launching", "stopping", "stopped", "errored"
RELOADING = "reloading"  # online, and rolling its workers onto a new generation
FORK_KILL_TIMEOUT_CAP = 30.0  # the most of a fork-mode app's --kill-timeout that is used


def checked_record(data: Any, where: str, say: Callable[[str], None]) -> dict[str, Any]:
    """An app record as read from `where`, its id, base_env and spec checked (unknown spec fields: said, ignored)."""
    if not isinstance(data, dict):
        raise schema.SpecError(f"{where}: an app record is an object")
    if not INTEGER.test(data.get("id")) or data["id"] < 0:
        raise schema.SpecError(f"{where}: id must be a whole number")
    base_env = data.get("base_env", {})
    if not VARIABLES.test(base_env):
        raise schema.SpecError(f"{where}: base_env must be {VARIABLES.what}")
    try:
        schema.variables(base_env)
    except ValueError as exc:
        raise schema.SpecError(f"{where}: invalid base_env: {exc}") from None
    spec = Spec.parse(data.get("spec"), where, say)
    return dict(data, id=int(data["id"]), spec=asdict(spec))


@dataclass(eq=False)
class App:
    id: int
    spec: Spec
    base_env: dict[str, str]  # the caller's environment at start (or --update-env)
    status: str = STOPPED
    pid: int = 0
    pid_started: int | None = None
    holder_pid: int = 0
    holder_started: int | None = None
    restarts: int = 0
    failures: int = 0  # restarts since it was last up long enough: the backoff's exponent
    unstable: int = 0  # restarts in a row of masters that exited before --min-uptime or before online
    workers: int = 0
    online_since: float = 0.0
    created: float = field(default_factory=time.time)
    last_error: str = ""
    listen: list[str] = field(default_factory=list)
    master_fds: list[int] = field(default_factory=list)  # the listeners' fd numbers inside the master
    log_pid: int = 0  # the log writer of the master (logfiles.py)
    log_started: int | None = None
    log_read_fds: list[int] = field(default_factory=list)  # the pipes' read ends, as numbered in the writer
    token: str = ""  # in the environment of every process of the running master (tree.py)
    cgroup: str = ""  # the running master's cgroup ('': none)
    # runtime only
    fds: list[int] = field(default_factory=list)  # the listeners (the holder has copies)
    log_fds: list[int] = field(default_factory=list)  # the daemon's copies of the pipes' read ends
    restart_timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.spec.name

    def record(self) -> dict[str, Any]:
        """What $PRUN_HOME/apps/<id>.json keeps, for a later daemon to adopt this app."""
        return {"id": self.id, "spec": asdict(self.spec), "base_env": self.base_env, "status": self.status,
                "pid": self.pid, "pid_started": self.pid_started, "holder_pid": self.holder_pid,
                "holder_started": self.holder_started, "restarts": self.restarts, "workers": self.workers,
                "unstable": self.unstable, "failures": self.failures,
                "online_since": self.online_since, "created": self.created, "listen": self.listen,
                "last_error": self.last_error, "master_fds": self.master_fds, "log_pid": self.log_pid,
                "log_started": self.log_started, "log_read_fds": self.log_read_fds, "token": self.token,
                "cgroup": self.cgroup}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> App:
        app = cls(int(data["id"]), Spec.from_dict(data["spec"]), dict(data.get("base_env", {})))
        for key in ("status", "pid", "pid_started", "holder_pid", "holder_started", "restarts", "workers",
                    "unstable", "failures",
                    "online_since", "created", "listen", "last_error", "master_fds", "log_pid", "log_started", "log_read_fds", "token", "cgroup"):
            if key in data:
                setattr(app, key, data[key])
        return app

    def log_paths(self, logs: str) -> tuple[str, str]:
        """The out and err log files (`logs`: $PRUN_HOME/logs)."""
        out = self.spec.log_file or os.path.join(logs, f"{self.name}-out.log")
        return out, self.spec.error_file or (out if self.spec.log_file else os.path.join(logs, f"{self.name}-err.log"))

    def environment(self) -> dict[str, str]:
        """The master's environment: the caller's, then --env; never sockets meant for someone else."""
        env = dict(self.base_env)
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "PRUN_CHANNEL_FD", "PRUN_MASTER_PID"):
            env.pop(key, None)
        env.update(self.spec.env)
        env["PRUN_APP_NAME"] = self.name
        return env

    def argv(self, control_fd: int) -> list[str]:
        """The master's command line (fork mode: its supervisor's); `control_fd` is its control listener."""
        spec = self.spec
        policy = [] if spec.autorestart else ["--no-autorestart"]  # the spec's field, an option of prun run
        if spec.mode == "fork":
            timeout = f"{min(spec.graceful_timeout, FORK_KILL_TIMEOUT_CAP):g}"
            return [sys.executable, "-m", "prun.cluster.daemon.forkmode", "--instances", spec.instances,
                    "--kill-timeout", timeout, "--name", spec.name, "--control-fd", str(control_fd),
                    *policy, *spec.run_args, "--", *spec.command]  # run_args: its policy and log options
        binds = [arg for fd in self.fds for arg in ("-b", f"fd://{fd}")]
        return [sys.executable, "-m", "prun.cluster", "run", spec.target, *spec.run_args, *policy,
                "-i", spec.instances, "--name", spec.name, *binds, "--control-fd", str(control_fd)]
