"""$PRUN_HOME: where the daemon keeps its sockets, its lock, its app records, the logs and the dump.

    $PRUN_HOME/            0700, refused if anyone else may write it
        rpc.sock           0600, the daemon's RPC socket (rpc.py)
        daemon.pid         the daemon's pid; daemon.lock is held (flock) while a daemon runs
        daemon.log         the daemon's own output
        apps/<id>.json     0600, one record per app: what it was started with, its pids (with their start
                           times, so a reused pid is never mistaken for the app), for re-adoption
        apps/<id>.sock     0600, the app's listener holder (holder.py)
        apps/<id>.ctl      0600, the control channel of the app's master (cluster/control.py): the
                           master listens, the daemon connects (again, after a daemon restart)
        logs/<name>-out.log, logs/<name>-err.log   and their rotated files (.1, .2[.gz] ...): logfiles.py
        dump.json          0600, `prun save`: only what each `start` was given (dump.py)
        dump.json.bak      0600, the dump before the last `prun save`
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from typing import Any

from prun.cluster.errors import PrunError


class Home:
    """The paths under one $PRUN_HOME (a plain class: the client imports it on every command)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def from_environ(cls, environ: Any = None) -> Home:
        environ = os.environ if environ is None else environ
        path = environ.get("PRUN_HOME") or os.path.join(os.path.expanduser("~"), ".prun")
        return cls(os.path.abspath(path))

    @property
    def rpc(self) -> str:
        return os.path.join(self.path, "rpc.sock")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.path, "daemon.pid")

    @property
    def lock_file(self) -> str:
        return os.path.join(self.path, "daemon.lock")

    @property
    def daemon_log(self) -> str:
        return os.path.join(self.path, "daemon.log")

    @property
    def apps(self) -> str:
        return os.path.join(self.path, "apps")

    @property
    def logs(self) -> str:
        return os.path.join(self.path, "logs")

    @property
    def dump(self) -> str:
        return os.path.join(self.path, "dump.json")

    def record(self, app_id: int) -> str:
        return os.path.join(self.apps, f"{app_id}.json")

    def control_socket(self, app_id: int) -> str:
        return os.path.join(self.apps, f"{app_id}.ctl")

    def holder_socket(self, app_id: int) -> str:
        return os.path.join(self.apps, f"{app_id}.sock")

    def ensure(self) -> None:
        """Create the home (0700) and its folders; refuse one that others may write or that is not ours."""
        old = os.umask(0o077)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            self.check()
            for sub in (self.apps, self.logs):
                os.makedirs(sub, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise PrunError(f"cannot create PRUN_HOME {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old)

    def check(self) -> None:
        """Refuse a home that is not a directory of ours closed to others' writes (a missing one passes)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise PrunError(f"PRUN_HOME {self.path} is not a directory")
        refuse_unless_private(f"PRUN_HOME {self.path}", st, 0o022, "others can write it", "chmod 700 it")

    def check_socket(self) -> None:
        """Refuse an rpc.sock that our daemon did not make: a socket (not a symlink), ours, closed to others.

        The client runs this (after check()) before it connects: nothing is sent to a socket that fails it.
        No rpc.sock at all passes: no daemon runs yet."""
        try:
            st = os.lstat(self.rpc)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise PrunError(f"refusing {self.rpc}: it is a symlink, not a socket")
        if not stat.S_ISSOCK(st.st_mode):
            raise PrunError(f"refusing {self.rpc}: it is not a socket")
        refuse_unless_private(self.rpc, st, 0o077, "others may connect to it", "the daemon makes it 0600")

    def daemon_pid(self) -> int | None:
        try:
            with open(self.pid_file) as fh:
                return int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def refuse_unless_private(label: str, st: os.stat_result, loose: int, complaint: str, fix: str) -> None:
    """Refuse (PrunError) a file of another user, or one with any of the `loose` mode bits."""
    if st.st_uid != os.getuid():
        raise PrunError(f"refusing {label}: it belongs to uid {st.st_uid}, not to you")
    if st.st_mode & loose:
        raise PrunError(f"refusing {label}: {complaint} (mode {stat.S_IMODE(st.st_mode):04o}; {fix})")


def write_private(path: str, data: Any, durable: bool = False, backup: str = "") -> None:
    """Write `data` as JSON to `path`, readable by the owner only: all of it, or nothing changes.

    The text goes to a temporary file beside `path` (`path.PID.tmp`), which then replaces it. On any
    failure (a full disk, an I/O error) the temporary file is removed, `path` is left as it was, and the
    OSError is raised. `durable`: on disk (fsync) before it replaces `path`. `backup`: the file `path`
    was, if any, is kept under that name (hard-linked first, so that `path` never goes missing).
    """
    payload = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a stale file of that name may have had another mode
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if backup:
            _keep(path, backup)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _keep(path: str, backup: str) -> None:
    """Make `backup` the file `path` is now (nothing if there is none), without ever removing `path`."""
    link = f"{backup}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    try:
        os.link(path, link)
    except FileNotFoundError:
        return
    try:
        os.replace(link, backup)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(link)
        raise


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, the identity of a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie has exited: it is not running
        return None
    return int(fields[19])


def alive(pid: int | None, started: int | None) -> bool:
    """The process `pid` runs and is the one that started at `started` (not a later reuse of the pid)."""
    return bool(pid) and start_time(pid or 0) == started
