"""Opening a log file for writing without being tricked into writing somewhere else.

A log path is often in a directory others can write (--log-file /tmp/app.log) and the process writing it
may be root (the daemon's log writer, a master). Another user could plant a symlink there to a file of
root's (the writes land in /etc/...), or a file of their own (they read the app's logs, or a FIFO that
blocks the writer). `open_log` refuses both with one line; everything that opens a log file for writing
calls it: the daemon's log writer (cluster/daemon/logfiles.py), a foreground master's --log-file
(cluster/log.py), `prun flush`, and the daemon when it creates an app's files.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat


class LogFileRefused(PermissionError):
    """A log path prun will not write through; its strerror is the one line that says why."""


def open_log(path: str, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode: int = 0o600) -> int:
    """Open (by default create, append-only) a log file; the fd (close-on-exec, blocking).

    As the kernel's protected_symlinks, but in any directory (not only sticky world-writable ones): a symlink
    at `path` (its last component) is followed only if it is owned by this user or root; the file opened
    must be owned by this user or root too; otherwise LogFileRefused (a PermissionError, its strerror one
    line naming the path and the owner). O_TRUNC in `flags` truncates only after the checks. A FIFO with no
    reader fails (ENXIO) instead of blocking. Other failures are the OSError of open(2).
    """
    truncate = bool(flags & os.O_TRUNC)
    flags = (flags & ~os.O_TRUNC) | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        link = os.lstat(path)
        if not stat.S_ISLNK(link.st_mode):
            raise
        if link.st_uid not in _trusted():
            raise LogFileRefused(errno.EPERM, f"{path} is a symbolic link owned by {_user(link.st_uid)}: "
                                              "not following it") from None
        fd = os.open(path, flags, mode)
    try:
        owner = os.fstat(fd).st_uid
        if owner not in _trusted():
            raise LogFileRefused(errno.EPERM, f"{path} belongs to {_user(owner)}, not to "
                                              f"{_user(os.geteuid())}: not writing into it")
        os.set_blocking(fd, True)
        if truncate:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _trusted() -> tuple[int, int]:
    return (os.geteuid(), 0)


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
