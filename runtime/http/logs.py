"""What the HTTP server writes: app errors to stderr (with a traceback, once) and the access log to stdout."""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import IO, Any

ACCESS_LOG_FORMATS = ("", "common", "json")


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
    """One report on stderr for a request the app failed: what the request was, then the traceback."""
    what = message or "exception in the app"
    lines = [f"prun: {what} ({scope.get('method', '?')} {_target(scope)})\n"]
    if exc is not None:
        lines.extend(traceback.format_exception(exc))
    try:
        sys.stderr.write("".join(lines))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class AccessLog:
    """One line per response on stdout: Common Log Format, or one JSON object per line."""

    def __init__(self, fmt: str, stream: IO[str] | None = None) -> None:
        if fmt not in ("common", "json"):
            raise ValueError(f"unknown access log format {fmt!r} (choose from common, json)")
        self.json = fmt == "json"
        self.stream = stream

    def write(self, scope: dict[str, Any], status: int, size: int, duration: float) -> None:
        """The line for one response: `size` body bytes sent, `duration` seconds since its request."""
        client = scope.get("client")
        host = client[0] if client else "-"
        now = time.time()
        if self.json:
            line = json.dumps(
                {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    "method": scope["method"],
                    "path": _target(scope),
                    "status": status,
                    "bytes": size,
                    "duration": round(duration, 6),
                }
            )
        else:
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
            request = f"{scope['method']} {_target(scope)} HTTP/{scope['http_version']}"
            line = f'{host} - - [{stamp}] "{request}" {status} {size if size else "-"}'
        stream = self.stream or sys.stdout
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass
