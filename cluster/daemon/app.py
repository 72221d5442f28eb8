"""One app as the daemon keeps it: what `start` was given (Spec), its state and pids (App), its record.

The record ($PRUN_HOME/apps/<id>.json) is what lets a later daemon adopt the app's running master;
runner.py starts and watches the processes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ONLINE, LAUNCHING, STOPPING, STOPPED, ERRORED = "online", "launching", "stopping", "stopped", "errored"


@dataclass
class Spec:
    """What `prun start` was given: all a restart, a dump and a resurrect need (no shell environment)."""

    name: str
    target: str
    mode: str  # cluster | fork
    cwd: str
    namespace: str = "default"
    instances: str = "1"
    run_args: list[str] = field(default_factory=list)  # options of `prun run`, as arguments
    bind: list[str] = field(default_factory=list)
    backlog: int = 2048
    graceful_timeout: float = 25.0
    command: list[str] = field(default_factory=list)  # fork mode
    env: dict[str, str] = field(default_factory=dict)  # --env KEY=VALUE
    autorestart: bool = True
    log_file: str = ""  # the out log ('' : $PRUN_HOME/logs/<name>-out.log)
    error_file: str = ""  # the err log ('' : $PRUN_HOME/logs/<name>-err.log)
    log_max_size: int = 10 << 20
    log_retain: int = 5
    log_compress: bool = False
    log_rotate_daily: bool = False
    log_time: str = ""  # strftime format each line is prefixed with ('': none)
    merge_logs: bool = True  # False: the master tags its workers' lines, the writer keeps a pair per worker

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if data.get("max_memory") and "--max-memory-restart" not in data.get("run_args", []):  # an older record
            known["run_args"] = [*data.get("run_args", []), "--max-memory-restart", str(data["max_memory"])]
        return cls(**known)


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
    failures: int = 0
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
                "online_since": self.online_since, "created": self.created, "listen": self.listen,
                "last_error": self.last_error, "master_fds": self.master_fds, "log_pid": self.log_pid,
                "log_started": self.log_started, "log_read_fds": self.log_read_fds, "token": self.token,
                "cgroup": self.cgroup}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> App:
        app = cls(int(data["id"]), Spec.from_dict(data["spec"]), dict(data.get("base_env", {})))
        for key in ("status", "pid", "pid_started", "holder_pid", "holder_started", "restarts", "workers",
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
        if spec.mode == "fork":
            timeout = f"{min(spec.graceful_timeout, 30.0):g}"
            return [sys.executable, "-m", "prun.cluster.daemon.forkmode", "--instances", spec.instances,
                    "--kill-timeout", timeout, "--name", spec.name, "--control-fd", str(control_fd),
                    *spec.run_args, "--", *spec.command]  # run_args: its log options (client.FORK_LOG_OPTIONS)
        binds = [arg for fd in self.fds for arg in ("-b", f"fd://{fd}")]
        return [sys.executable, "-m", "prun.cluster", "run", spec.target, *spec.run_args, "-i", spec.instances,
                "--name", spec.name, *binds, "--control-fd", str(control_fd)]
