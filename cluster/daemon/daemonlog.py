"""The daemon's own output ($PRUN_HOME/daemon.log) as streams a full or failing disk cannot break.

The daemon says what it does with print() (god.py's `say`, tracebacks of its bugs). On a plain stdout, a
full disk makes that print raise, and the operation that was speaking (a stop, a restart, the reply to a
command) fails with it. Installed as sys.stdout and sys.stderr, a `DaemonLog` never raises: text the disk
refuses is kept (up to HOLD bytes, the oldest whole lines dropped and counted beyond that) and written,
whole, as soon as a later write succeeds, after a line saying how many were dropped.
"""

from __future__ import annotations

import io
import os

HOLD = 64 << 10  # bytes kept while the disk refuses them


class DaemonLog(io.TextIOBase):
    """A line-buffered text stream on a file descriptor whose writes never raise."""

    encoding = "utf-8"

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.pending = bytearray()
        self.dropped = 0  # lines lost while the disk refused them, not yet reported

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, text: str) -> int:
        self.pending += text.encode("utf-8", "backslashreplace")
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.dropped and self.pending:
            self.pending[:0] = f"prun: warning: {self.dropped} lines of this log were dropped (a full disk)\n".encode()
            self.dropped = 0
        while self.pending:
            try:
                written = os.write(self.fd, self.pending)
            except InterruptedError:
                continue
            except OSError:
                self._hold()
                return
            del self.pending[:written]

    def _hold(self) -> None:
        """Keep what could not be written, within HOLD: the oldest whole lines go first."""
        while len(self.pending) > HOLD:
            end = self.pending.find(b"\n")
            cut = end + 1 if end >= 0 else len(self.pending) - HOLD
            del self.pending[:cut]
            self.dropped += 1


def install() -> None:
    """Make the daemon's stdout and stderr DaemonLogs on the same descriptors."""
    import sys

    sys.stdout = DaemonLog(1)
    sys.stderr = DaemonLog(2)
