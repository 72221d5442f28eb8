"""Where the relay's whole lines go: the master's stdout and stderr (and --access-log-file), written by a thread.

The master's loop never waits on a log. OutputRelay (output.py) queues whole lines here and goes on; one
thread writes them, in the order they were queued, with blocking writes. Under the daemon they go to the
log writer's pipes as frames (logframe.py); in the foreground, as they are, to the terminal, the --log-file
or a container's log pipe.

Bounds, so that memory stays bounded whatever the reader does: past HIGH bytes queued, the relay stops
reading its workers' pipes (their lines wait there, and a worker whose pipe is full waits in its print, as
it would for a slow terminal); below LOW it reads again. The master's own lines are always taken, up to
HARD bytes; past that they are dropped and counted. A write that fails (EPIPE: the reader is gone; ENOSPC,
EDQUOT, EFBIG: a full disk) drops its lines and counts them; once a write succeeds again, a line says how
many were lost.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
from collections.abc import Callable

from prun.cluster.logframe import ACCESS, ACCESS_PATH, ERR, HEADER, grow_pipe, header

HIGH = 1 << 20
LOW = 256 << 10
HARD = 16 << 20
JOIN_TIMEOUT = 5.0  # at exit, for the queued lines to be written


class Sink:
    """The queue of lines to write and the thread that writes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, framed: bool, pipe_size: int = 256 << 10,
                 access_fd: int = -1) -> None:
        self.loop = loop
        self.framed = framed
        self.access_fd = access_fd
        # a frame must fit in the pipe twice over: the writer sees a whole one before it takes it (logframe.py)
        self.frame_max = min(grow_pipe(1, pipe_size), grow_pipe(2, pipe_size)) // 2 - HEADER.size if framed else 0
        self.seq = {1: 0, 2: 0}
        self.queue: list[tuple[int, bytes, int]] = []  # (fd, bytes, lines), in order
        self.queued = 0
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        self.paused = False
        self.on_pressure: Callable[[bool], None] = _ignore  # the relay pauses (True) and resumes its readers
        self.on_dropped: Callable[[int, str], None] = _ignore_drops  # (lines, reason), on the loop
        self.dropped = 0  # lines lost to failed writes (the thread's) or to the HARD bound (the loop's)
        self.reason = ""
        self.own_dropped = 0
        self.thread = threading.Thread(target=self._run, name="prun log output", daemon=True)
        self.thread.start()

    @property
    def line_max(self) -> int:
        """The longest line (with its newline) a frame can carry; no bound in the foreground."""
        return self.frame_max if self.framed else 1 << 62

    def put(self, kind: int, source: int, data: bytes, lines: int, own: bool = False) -> None:
        """Queue whole lines (`data`, `lines` of them) of `kind` (logframe.OUT, ERR, ACCESS) from `source`."""
        if not data:
            return
        fd = self._fd(kind)
        if fd < 0:
            return
        if own and self.queued > HARD:
            self.own_dropped += lines
            return
        if own and self.own_dropped:
            dropped, self.own_dropped = self.own_dropped, 0
            self.loop.call_soon(self.on_dropped, dropped, "too many lines waiting to be written")
        if self.framed:
            chunks = []
            for payload in self._frames(data):
                self.seq[fd] += 1
                chunks.append(header(kind, source, self.seq[fd], len(payload)) + payload)
            data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        with self.lock:
            self.queue.append((fd, data, lines))
            self.queued += len(data)
            if not self.wake.is_set():
                self.wake.set()
        if not own and not self.paused and self.queued > HIGH:
            self.paused = True
            self.on_pressure(True)

    def announce_access(self, path: str) -> None:
        """Framed: tell the log writer where the access log goes (it writes and rotates that file)."""
        if self.framed:
            self.put(ACCESS_PATH, 0, path.encode("utf-8", "surrogateescape"), 0, own=True)

    def _fd(self, kind: int) -> int:
        if kind == ERR:
            return 2
        if kind == ACCESS and not self.framed:
            return self.access_fd
        return 1

    def _frames(self, data: bytes) -> list[bytes]:
        """`data` in payloads of at most frame_max bytes, cut between lines."""
        if len(data) <= self.frame_max:
            return [data]
        payloads = []
        start = 0
        while len(data) - start > self.frame_max:
            end = data.rfind(b"\n", start, start + self.frame_max) + 1
            if end <= start:  # one line longer than a frame (the relay's bound should have cut it)
                end = start + self.frame_max
            payloads.append(data[start:end])
            start = end
        payloads.append(data[start:])
        return payloads

    # ---- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.wake.wait()
            with self.lock:
                items, self.queue = self.queue, []
                self.wake.clear()
                closing = self.closing
            if not items:
                if closing:
                    return
                continue
            written = 0
            i = 0
            while i < len(items):  # what goes to one fd, one write
                fd = items[i][0]
                j = i
                while j < len(items) and items[j][0] == fd:
                    j += 1
                data = items[i][1] if j == i + 1 else b"".join(item[1] for item in items[i:j])
                self._write(fd, data, sum(item[2] for item in items[i:j]))
                written += len(data)
                i = j
            with self.lock:
                self.queued -= written
                resume = self.paused and self.queued < LOW
            if resume:
                self.loop.call_soon_threadsafe(self._resume)

    def _write(self, fd: int, data: bytes, lines: int) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:  # someone made the fd non-blocking (a terminal shared with a shell)
                    select.select([], [fd], [], 1.0)
        except OSError as exc:
            lost = lines if self.framed or len(view) == len(data) else view.tobytes().count(b"\n")
            self.dropped += lost
            self.reason = exc.strerror or str(exc)
            return
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self.loop.call_soon_threadsafe(self.on_dropped, dropped, self.reason)

    def _resume(self) -> None:
        if self.paused and self.queued < LOW:
            self.paused = False
            self.on_pressure(False)

    def close(self, timeout: float = JOIN_TIMEOUT) -> bool:
        """Write what is queued (for at most `timeout` seconds) and stop the thread; whether all was written."""
        with self.lock:
            self.closing = True
            self.wake.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def _ignore(paused: bool) -> None:
    """Until a relay is attached."""


def _ignore_drops(lines: int, reason: str) -> None:
    """Until a relay is attached."""
