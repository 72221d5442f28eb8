"""What the HTTP server writes: app errors to stderr (with a traceback, once) and the access log.

An app's exception is one report: in text, a line saying which request, then the traceback; under
--log-format json, one JSON record with the traceback in a field (runtime/logrecord.py).

The access log is one line per response, on stdout, or on the pipe the master gave this worker for
--access-log-file (WorkerOptions.access_log_fd): the Common Log Format, a format string of gunicorn's
access_log_format atoms (--access-log-format), or one JSON object.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import sys
import time
import traceback
from typing import IO, Any

from prun.runtime.logrecord import TimeFormat, error_record
from prun.runtime.options import WorkerOptions

ACCESS_LOG_FORMATS = ("", "common", "json")
COMMON = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'


def _target(scope: dict[str, Any]) -> str:
    path = scope.get("path", "")
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def log_line(message: str) -> None:
    """One line about a connection on stderr (a client dropped for a timeout, ...)."""
    try:
        sys.stderr.write(f"prun: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def log_app_error(scope: dict[str, Any], exc: BaseException | None, message: str = "") -> None:
    """One report on stderr for a request the app failed: what the request was, then the traceback
    (under --log-format json: one record, the traceback in its `traceback` field)."""
    what = f"{message or 'exception in the app'} ({scope.get('method', '?')} {_target(scope)})"
    tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
    records: TimeFormat | None = getattr(sys.stderr, "records", None)
    if records is not None:
        report = error_record(what, tb.rstrip("\n"), records) + "\n"
    else:
        report = f"prun: {what}\n{tb}"
    try:
        sys.stderr.write(report)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Atoms(dict[str, str]):
    """gunicorn's access log atoms for one response, each computed only when the format names it."""

    def __init__(self, scope: dict[str, Any], status: int, size: int, duration: float, now: float) -> None:
        super().__init__()
        self.scope, self.status, self.size, self.duration, self.now = scope, status, size, duration, now

    def header(self, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for key, value in self.scope.get("headers", ()):
            if key.lower() == wanted:
                return bytes(value).decode("latin-1")
        return "-"

    def user(self) -> str:
        kind, _, credentials = self.header("authorization").partition(" ")
        if kind.lower() != "basic":
            return "-"
        try:
            return base64.b64decode(credentials).decode("latin-1").partition(":")[0] or "-"
        except (binascii.Error, ValueError):
            return "-"

    def __missing__(self, key: str) -> str:  # one atom per branch, as gunicorn's table
        scope, duration = self.scope, self.duration
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return self.header(name)
            if kind == "e":
                return os.environ.get(name, "-")
            return "-"  # {name}o, a response header: not kept after the response is written
        client = scope.get("client")
        value: object
        if key == "h":
            value = client[0] if client else "-"
        elif key == "l":
            value = "-"
        elif key == "u":
            value = self.user()
        elif key == "t":
            value = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(self.now))
        elif key == "r":
            value = f"{scope.get('method', '-')} {_target(scope)} HTTP/{scope.get('http_version', '1.1')}"
        elif key == "m":
            value = scope.get("method", "-")
        elif key == "U":
            value = scope.get("path", "")
        elif key == "q":
            value = scope.get("query_string", b"").decode("latin-1")
        elif key == "H":
            value = f"HTTP/{scope.get('http_version', '1.1')}"
        elif key == "s":
            value = self.status
        elif key == "B":
            value = self.size
        elif key == "b":
            value = self.size if self.size else "-"
        elif key == "f":
            value = self.header("referer")
        elif key == "a":
            value = self.header("user-agent")
        elif key == "T":
            value = int(duration)
        elif key == "M":
            value = int(duration * 1000)
        elif key == "D":
            value = int(duration * 1_000_000)
        elif key == "L":
            value = f"{duration:.6f}"
        elif key == "p":
            value = f"<{os.getpid()}>"
        else:
            value = "-"
        text = str(value)
        self[key] = text
        return text


class AccessLog:
    """One line per response: the Common Log Format, a gunicorn-style format string, or one JSON object."""

    def __init__(self, fmt: str, stream: IO[str] | None = None, line_format: str = "",
                 json_time: str = "rfc3339") -> None:
        if fmt not in ("common", "json"):
            raise ValueError(f"unknown access log format {fmt!r} (choose from common, json)")
        self.json = fmt == "json"
        self.stream = stream
        self.line_format = line_format if line_format and line_format != COMMON else ""
        self.time = TimeFormat(json_time)

    @classmethod
    def from_options(cls, options: WorkerOptions) -> AccessLog | None:
        """The access log a worker's options ask for (a format string or a file turns it on), or None."""
        fmt = options.access_log or ("common" if options.access_log_format or options.access_log_fd >= 0 else "")
        if not fmt:
            return None
        stream = None
        if options.access_log_fd >= 0:
            from prun.runtime.output import GuardedOutput

            os.set_inheritable(options.access_log_fd, False)  # the app's children must not hold the master's pipe
            stream = io.TextIOWrapper(io.BufferedWriter(GuardedOutput(options.access_log_fd, closefd=True)),
                                      encoding="utf-8", errors="backslashreplace", line_buffering=True)
        return cls(fmt, stream, options.access_log_format, options.log_json_time)

    def write(self, scope: dict[str, Any], status: int, size: int, duration: float) -> None:
        """The line for one response: `size` body bytes sent, `duration` seconds since its request."""
        now = time.time()
        if self.json:
            client = scope.get("client")
            line = json.dumps(
                {
                    "time": self.time(now),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    "method": scope["method"],
                    "path": _target(scope),
                    "status": status,
                    "bytes": size,
                    "duration": round(duration, 6),
                }
            )
        elif self.line_format:
            line = self.line_format % Atoms(scope, status, size, duration, now)
        else:  # the Common Log Format, written out: the default, one f-string per response
            client = scope.get("client")
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
            request = f"{scope['method']} {_target(scope)} HTTP/{scope['http_version']}"
            line = f'{client[0] if client else "-"} - - [{stamp}] "{request}" {status} {size if size else "-"}'
        stream = self.stream or sys.stdout
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def check_format(line_format: str) -> str:
    """'' if a --access-log-format works, else why not (a BootError's sentence)."""
    try:
        line_format % Atoms({}, 200, 0, 0.0, 0.0)
    except (TypeError, ValueError, KeyError) as exc:
        return f"invalid --access-log-format {line_format!r}: {exc}"
    return ""
