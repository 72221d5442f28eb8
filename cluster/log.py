"""The master's log: one line per event on stderr, as text or as JSON lines."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

WORKER_TAG = "\x1e"  # ASCII record separator: never in a line an app prints on purpose


class Log:
    """Writes the master's own lines; `json` gives one object per line for log collectors."""

    def __init__(self, fmt: str = "text", app: str = "", stream: TextIO | None = None,
                 out: TextIO | None = None) -> None:
        self.fmt = fmt
        self.tag_workers = False  # --no-merge-logs under the daemon: WORKER_TAG slot WORKER_TAG before each line
        self.app = app
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout

    def _write(self, level: str, message: str, fields: dict[str, Any]) -> None:
        if self.fmt == "json":
            record = {"time": round(time.time(), 3), "level": level, "app": self.app, "worker": None,
                      "pid": os.getpid(), "stream": "stderr"}
            record.update(fields)
            record["msg"] = message
            line = json.dumps(record, default=str)
        else:
            line = f"prun: {message}" if level == "info" else f"prun: {level}: {message}"
            if fields.get("traceback"):
                line += "\n" + str(fields["traceback"]).rstrip()
        self._emit(self.stream, line)

    @staticmethod
    def _emit(stream: TextIO, line: str) -> None:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the master

    def worker_line(self, slot: int, pid: int, stream: str, text: str) -> None:
        """A line a worker printed, as a JSON object (a line that is a JSON object is merged in), or as it is
        with its worker's tag (--no-merge-logs: the daemon's log writer files it by worker)."""
        target = self.out if stream == "stdout" else self.stream
        if self.fmt != "json":
            self._emit(target, f"{WORKER_TAG}{slot}{WORKER_TAG}{text}" if self.tag_workers else text)
            return
        record: dict[str, Any] = {"time": round(time.time(), 3), "level": "info" if stream == "stdout" else "error",
                                  "app": self.app, "worker": slot, "pid": pid, "stream": stream}
        parsed = None
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            record.update({k: v for k, v in parsed.items() if k not in record})
        else:
            record["msg"] = text
        line = json.dumps(record, default=str)
        self._emit(target, f"{WORKER_TAG}{slot}{WORKER_TAG}{line}" if self.tag_workers else line)

    def open_file(self, path: str) -> int:
        """Send the master's stdout and stderr (and so its workers') to `path`; the new fd. Another user's
        symlink or file there is refused (logopen.py)."""
        from prun.cluster.logopen import open_log

        try:
            fd = open_log(path, mode=0o640)
        except OSError as exc:
            from prun.cluster.errors import PrunError

            raise PrunError(f"cannot open log file {path}: {exc.strerror}") from None
        for stream in (self.out, self.stream):
            stream.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        return fd

    def info(self, message: str, **fields: Any) -> None:
        self._write("info", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._write("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._write("error", message, fields)
