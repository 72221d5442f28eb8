"""The master's log: one line per event on stderr, as text or as JSON lines."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Log:
    """Writes the master's own lines; `json` gives one object per line for log collectors."""

    def __init__(self, fmt: str = "text", app: str = "", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.app = app
        self.stream = stream or sys.stderr

    def _write(self, level: str, message: str, fields: dict[str, Any]) -> None:
        if self.fmt == "json":
            record = {"time": round(time.time(), 3), "level": level, "app": self.app, "source": "master"}
            record.update(fields)
            record["msg"] = message
            line = json.dumps(record)
        else:
            line = f"prun: {message}" if level == "info" else f"prun: {level}: {message}"
            if fields.get("traceback"):
                line += "\n" + str(fields["traceback"]).rstrip()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the master

    def info(self, message: str, **fields: Any) -> None:
        self._write("info", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._write("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._write("error", message, fields)
