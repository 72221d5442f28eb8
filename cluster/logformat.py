"""--log-format json: the records of the master's own events and of what its workers (or instances) print.

Every record is one JSON object on one line:

    {"time": "2026-12-02T09:19:03.123+01:00", "level": "info", "app": "api", "worker": 1, "pid": 4243,
     "stream": "stdout", "message": "said hello"}

- `worker` is the worker's slot (a fork-mode instance's index), null for the master's own lines; `stream`
  is stdout, stderr or access.
- `level`: the master's own level; for a printed line, from its first word when it is a level as Python's
  logging writes it (`WARNING:root:...`, `ERROR: ...`) or prun's (`prun: warning: ...`: a line of prun's own,
  `message` without that prefix), else info on stdout and error on stderr.
- A line that is a JSON object is that object, with `time`, `level`, `app`, `worker`, `pid`, `stream`
  added where it has none (its own `app`, `worker`, `pid` and `stream` give way to prun's).
- A Python traceback (`Traceback (most recent call last):` to its exception line, chained ones included)
  is one record: `message` is its last line, `traceback` the whole.
- A line cut for --log-max-line: a record per piece, with `part` (0, 1, ...) and `partial: true` on all but
  the last.
"""

from __future__ import annotations

import json
from typing import Any

from prun.runtime.logrecord import TimeFormat

IDENTITY = ("app", "worker", "pid", "stream")
LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "WARN": "warning", "ERROR": "error",
          "CRITICAL": "critical", "FATAL": "critical"}
TRACEBACK = "Traceback (most recent call last):"
CHAINED = ("", "During handling of the above exception, another exception occurred:",
           "The above exception was the direct cause of the following exception:")
TRACEBACK_MAX_LINES = 2000  # a traceback held longer than this (lines, bytes) is given as it is so far
TRACEBACK_MAX_BYTES = 256 << 10


class Records:
    """Makes JSON records for one app (the master's own and its processes' lines)."""

    def __init__(self, app: str, time_style: str = "rfc3339") -> None:
        self.app = app
        self.time = TimeFormat(time_style)
        self.middles: dict[tuple[str, int | None, int, str], str] = {}  # the fields between time and message

    def event(self, level: str, message: str, worker: int | None, pid: int, stream: str, now: float,
              fields: dict[str, Any] | None = None) -> bytes:
        if not fields:  # hot (one call per line a worker prints): only the time and the message are encoded
            middle = self.middles.get((level, worker, pid, stream))
            if middle is None:
                if len(self.middles) > 1000:  # (workers come and go)
                    self.middles.clear()
                middle = self.middles[(level, worker, pid, stream)] = ", " + json.dumps(
                    {"level": level, "app": self.app, "worker": worker, "pid": pid, "stream": stream},
                    ensure_ascii=False)[1:-1] + ', "message": '
            text = '{"time": ' + json.dumps(self.time(now)) + middle + json.dumps(message, ensure_ascii=False) + "}\n"
            return text.encode("utf-8", "backslashreplace")
        record: dict[str, Any] = {"time": self.time(now), "level": level, "app": self.app, "worker": worker,
                                  "pid": pid, "stream": stream}
        record.update((k, v) for k, v in fields.items() if v is not None and k not in record)
        record["message"] = message
        return encode(record)

    def line(self, text: str, worker: int | None, pid: int, stream: str, now: float,
             fields: dict[str, Any] | None = None) -> bytes:
        """A line a process printed: its own JSON object, or a record around it."""
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                record: dict[str, Any] = {"time": self.time(now), "level": level_of("", stream)}
                record.update(parsed)
                record.update(app=self.app, worker=worker, pid=pid, stream=stream)
                if fields:
                    record.update(fields)
                return encode(record)
        level = level_of(text, stream)
        if worker is None and text.startswith("prun: "):  # the master's (supervisor's) own: its words only
            text = text[6:].removeprefix(f"{level}: ")
        return self.event(level, text, worker, pid, stream, now, fields)

    def traceback(self, lines: list[str], worker: int | None, pid: int, stream: str, now: float) -> bytes:
        while lines and not lines[-1]:
            lines.pop()
        message = next((line for line in reversed(lines) if line.strip()), TRACEBACK)
        return self.event("error", message, worker, pid, stream, now, {"traceback": "\n".join(lines)})


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace") + b"\n"


def level_of(text: str, stream: str) -> str:
    """The level a printed line says it has, else the stream's (info on stdout, error on stderr)."""
    if text.startswith("prun: "):
        rest = text[6:]
        if rest.startswith("warning: "):
            return "warning"
        if rest.startswith("error: "):
            return "error"
        return "info"
    head = text[:9].partition(":")[0]
    if head.isupper() and head in LEVELS:
        return LEVELS[head]
    return "error" if stream == "stderr" else "info"


class Tracebacks:
    """Gathers the lines of a Python traceback printed on one stream, to make them one record."""

    def __init__(self) -> None:
        self.lines: list[str] | None = None
        self.size = 0
        self.frames = False  # inside the frames: the exception line has not come yet

    def push(self, line: str) -> tuple[list[str] | None, bool]:
        """Take one line: (a traceback that is now complete, or None; whether `line` was taken into one)."""
        if self.lines is not None:
            self.size += len(line)
            if self.frames:
                self.lines.append(line)
                if line and not line[0].isspace() and line != TRACEBACK:
                    self.frames = False  # the exception line: chained tracebacks may follow
                return self._bounded(), True
            if line in CHAINED or line == TRACEBACK:
                self.lines.append(line)
                self.frames = line == TRACEBACK
                return self._bounded(), True
            done, self.lines = self.lines, None
            if line == TRACEBACK:
                self.lines, self.frames, self.size = [line], True, len(line)
                return done, True
            return done, False
        if line == TRACEBACK:
            self.lines, self.frames, self.size = [line], True, len(line)
            return None, True
        return None, False

    def _bounded(self) -> list[str] | None:
        if self.lines is not None and (len(self.lines) >= TRACEBACK_MAX_LINES or self.size >= TRACEBACK_MAX_BYTES):
            done, self.lines, self.frames = self.lines, None, False
            return done
        return None

    def settle(self, eof: bool = False) -> list[str] | None:
        """Nothing more arrived for now: a traceback that reached its exception line is complete (a chained one
        printed later is a record of its own); at EOF, whatever was gathered."""
        if self.lines is not None and (eof or not self.frames):
            done, self.lines, self.frames = self.lines, None, False
            return done
        return None
