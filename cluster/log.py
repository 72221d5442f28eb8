"""The master's log: one line per event on stderr, as text or as JSON records (cluster/logformat.py).

While an output relay runs (cluster/output.py: under the daemon, --log-format json, --access-log-file),
the lines go through it, in order with the workers' lines; before it starts and after it ends, straight to
stderr.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Protocol, TextIO

from prun.cluster.logformat import Records


class OwnOutput(Protocol):
    """Where the master's own lines go while a relay runs (cluster/output.py's OutputRelay)."""

    def own(self, stream: str, line: bytes) -> None: ...


LEVELS = ("debug", "info", "warning", "error")  # --log-level: the lines below the one given are not written


def plural(count: int, noun: str) -> str:
    """'1 worker', '2 workers': a count as a user reads it."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Log:
    """Writes the master's own lines; `json` gives one record per line for log collectors."""

    def __init__(self, fmt: str = "text", app: str = "", stream: TextIO | None = None,
                 json_time: str = "rfc3339", level: str = "info") -> None:
        self.fmt = fmt
        self.least = LEVELS.index(level)
        self.app = app
        self.stream = stream or sys.stderr
        self.records = Records(app, json_time) if fmt == "json" else None
        self.output: OwnOutput | None = None

    def _write(self, level: str, message: str, fields: dict[str, Any]) -> None:
        if LEVELS.index(level) < self.least:
            return
        if self.records is not None:
            data = self.records.event(level, message, None, os.getpid(), "stderr", time.time(), fields)
        else:
            line = f"prun: {message}" if level in ("info", "debug") else f"prun: {level}: {message}"
            if fields.get("traceback"):
                line += "\n" + str(fields["traceback"]).rstrip()
            data = line.encode("utf-8", "backslashreplace") + b"\n"
        if self.output is not None:
            self.output.own("stderr", data)
            return
        try:
            self.stream.write(data.decode("utf-8", "replace"))
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the master

    def open_file(self, path: str) -> int:
        """Send the master's stdout and stderr (and so its workers') to `path`; the new fd. Another user's
        symlink or file there is refused (logopen.py)."""
        from prun.cluster.logopen import open_log

        try:
            fd = open_log(path, mode=0o640)
        except OSError as exc:
            from prun.cluster.errors import PrunError

            raise PrunError(f"cannot open log file {path}: {exc.strerror}") from None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        return fd

    def debug(self, message: str, **fields: Any) -> None:
        """What only --log-level debug shows: how prun works inside (the balancing switches)."""
        self._write("debug", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._write("info", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._write("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._write("error", message, fields)
