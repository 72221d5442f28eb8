"""A worker's stdout and stderr: whole lines, and never an exception into the app because the log is gone.

A worker's fds 1 and 2 are pipes of its own that its master reads (cluster/output.py: under the daemon,
with --log-format json or --access-log-file), or the master's terminal, or a --log-file. If the reader dies,
every write is EPIPE, and a plain `print()` raises
BrokenPipeError inside the app: each request of an app that prints fails, and a worker that prints at
import cannot boot. `install()` replaces sys.stdout and sys.stderr with streams whose writes into a broken
pipe (or a full disk: ENOSPC, EDQUOT, EFBIG) are dropped and counted instead. They still write to fds 1
and 2 themselves, so when the master sends a new log fd (channel.LogFile, dup2'd onto 1 and 2) writes go
there again at once, and `reopened()` says there how many were dropped meanwhile.

Only the Python streams are guarded: a C extension or `os.write(1, ...)` still sees the error.

Under --log-format json the streams also say so (`Stream.records`): what prun's own code in the worker
writes as one event (an app's exception with its traceback, runtime/http/logs.py) is then one JSON line.
"""

from __future__ import annotations

import errno
import io
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from prun.runtime.logrecord import TimeFormat

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

DROPPED = frozenset((errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


class GuardedOutput(io.FileIO):
    """fd 1 or 2 as the app writes to it: a write the reader cannot take is dropped (counted), not raised.

    Hot path: one Python call per line (line buffering), the cost of an exception only when one occurs.
    """

    def __init__(self, fd: int, closefd: bool = False) -> None:
        super().__init__(fd, "wb", closefd=closefd)
        self.dropped = 0  # writes dropped since the last reopened()
        self.reason = ""

    def write(self, data: ReadableBuffer, _write: Callable[[io.FileIO, ReadableBuffer], int] = io.FileIO.write) -> int:
        try:
            return _write(self, data)  # (bound once: half the cost of super().write)
        except OSError as exc:
            if exc.errno not in DROPPED:
                raise
            self.dropped += 1
            self.reason = exc.strerror or str(exc)
            return memoryview(data).nbytes


class Stream(io.TextIOWrapper):
    """sys.stdout or sys.stderr of a worker: `records` is the time format of JSON records under --log-format json
    (None: text), for what prun writes there as one event."""

    records: TimeFormat | None = None


def use_json(style: str) -> None:
    """--log-format json: prun's own multi-line reports on these streams become one JSON record each."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, Stream):
            stream.records = TimeFormat(style)


def install() -> list[GuardedOutput]:
    """Replace sys.stdout and sys.stderr (those that are open) with guarded, line-buffered streams of the
    same encoding: one print, one write(2), whole lines the log writer can keep whole (even under
    PYTHONUNBUFFERED, which would write a line's text and its newline apart). The raw outputs, for reopened()."""
    guards = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, io.TextIOWrapper):
            continue
        try:
            fd = stream.fileno()
            stream.flush()
        except (OSError, ValueError):
            continue
        guard = GuardedOutput(fd)
        setattr(sys, name, Stream(io.BufferedWriter(guard), encoding=stream.encoding, errors=stream.errors,
                                  line_buffering=True, write_through=False))
        guards.append(guard)
    return guards


def reopened(guards: list[GuardedOutput]) -> None:
    """fds 1 and 2 were replaced (a new log file): say there what was dropped before, and count anew."""
    for guard in guards:
        if guard.dropped:
            stream = "stdout" if guard.fileno() == 1 else "stderr"
            print(f"prun worker: {guard.dropped} writes to {stream} were dropped ({guard.reason})",
                  file=sys.stderr, flush=True)
            guard.dropped = 0
