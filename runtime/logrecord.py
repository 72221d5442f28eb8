"""A log event as one JSON object (--log-format json): the time it carries, and the records a worker writes itself.

Every record has a `time`: RFC 3339 with milliseconds and the local zone (`2026-12-02T09:19:03.123+01:00`),
or seconds since the epoch with --log-json-time epoch (`1764663543.123`). The master adds `app`, `worker`,
`pid` and `stream` to every line a worker writes (cluster/logformat.py); a worker writes a whole JSON object
itself only where one event would otherwise be many lines: an exception in the app (runtime/http/logs.py),
one record with its traceback in a field.

Shared with cluster/ (which may import runtime/, never the other way round).
"""

from __future__ import annotations

import json
import time

TIME_STYLES = ("rfc3339", "epoch")


class TimeFormat:
    """A record's time in one style; the part down to the second is built once a second (hot: one call per record)."""

    __slots__ = ("epoch", "second", "prefix", "zone")

    def __init__(self, style: str = "rfc3339") -> None:
        if style not in TIME_STYLES:
            raise ValueError(f"unknown time style {style!r} (choose from {', '.join(TIME_STYLES)})")
        self.epoch = style == "epoch"
        self.second = -1
        self.prefix = ""
        self.zone = ""

    def __call__(self, when: float) -> str | float:
        if self.epoch:
            return round(when, 3)
        second = int(when)
        if second != self.second:
            local = time.localtime(second)
            offset = local.tm_gmtoff
            sign = "+" if offset >= 0 else "-"
            offset = abs(offset)
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", local)
            self.zone = f"{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"
        return f"{self.prefix}.{int((when - second) * 1000):03d}{self.zone}"


def error_record(message: str, traceback: str, when: TimeFormat) -> str:
    """One JSON line for an error and its traceback (no newline)."""
    record: dict[str, object] = {"time": when(time.time()), "level": "error", "message": message}
    if traceback:
        record["traceback"] = traceback
    return json.dumps(record)
