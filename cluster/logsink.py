"""Where the relay's whole lines go: the master's stdout and stderr (and --access-log-file), never blocking its loop.

OutputRelay (output.py) queues whole lines here and goes on. Under the daemon they go to the log writer's
pipes as frames (logframe.py): those pipes are the master's alone (its workers write into pipes of their
own), so the loop writes them itself, non-blocking, and waits for room with the loop's writer callback. In
the foreground they go, as they are, to a terminal, a --log-file or a container's log pipe, which the
master shares with others (making them non-blocking would change them for a shell too): there one thread
writes them, in order, with blocking writes.

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
import time
from collections import deque
from collections.abc import Callable

from prun.cluster.logframe import ACCESS, ACCESS_PATH, ERR, HEADER, grow_pipe, header

HIGH = 1 << 20
LOW = 256 << 10
HARD = 16 << 20
CLOSE_TIMEOUT = 5.0  # at exit, for the queued lines to be written


class Sink:
    """The lines waiting to be written, and what writes them (the loop under the daemon, else a thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, framed: bool, pipe_size: int = 256 << 10,
                 access_fd: int = -1) -> None:
        self.loop = loop
        self.framed = framed
        self.access_fd = access_fd
        # a frame must fit in the pipe twice over: the writer sees a whole one before it takes it (logframe.py)
        self.frame_max = min(grow_pipe(1, pipe_size), grow_pipe(2, pipe_size)) // 2 - HEADER.size if framed else 0
        self.seq = {1: 0, 2: 0}
        self.queued = 0  # bytes waiting
        self.paused = False
        self.on_pressure: Callable[[bool], None] = _ignore  # the relay pauses (True) and resumes its readers
        self.on_dropped: Callable[[int, str], None] = _ignore_drops  # (lines, reason), on the loop
        self.dropped = 0  # lines lost to failed writes, not yet reported
        self.reason = ""
        self.own_dropped = 0  # the master's own lines past HARD
        self.backlog: dict[int, deque[tuple[bytes, int]]] = {1: deque(), 2: deque()}  # framed: what waits, by fd
        self.thread: Writer | None = None
        if framed:
            for fd in (1, 2):
                os.set_blocking(fd, False)
        else:
            self.thread = Writer(self)

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
            self._write_now(fd, self._framed(kind, source, fd, data), lines)
        else:
            assert self.thread is not None
            self.thread.put(fd, data, lines)
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

    def _framed(self, kind: int, source: int, fd: int, data: bytes) -> bytes:
        """`data` as frames of at most frame_max bytes of payload, cut between lines."""
        if len(data) <= self.frame_max:
            self.seq[fd] += 1
            return header(kind, source, self.seq[fd], len(data)) + data
        chunks = []
        start = 0
        while start < len(data):
            end = start + self.frame_max
            if end < len(data):
                end = data.rfind(b"\n", start, end) + 1
                if end <= start:  # one line longer than a frame: its pieces follow each other
                    end = start + self.frame_max
            self.seq[fd] += 1
            chunks.append(header(kind, source, self.seq[fd], len(data[start:end])) + data[start:end])
            start = end
        return b"".join(chunks)

    # ---- framed: the loop writes its own pipes ------------------------------------------------------

    def _write_now(self, fd: int, data: bytes, lines: int) -> None:
        backlog = self.backlog[fd]
        if not backlog:
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self.lost(lines, exc)
                return
            if written == len(data):
                self.wrote()
                return
            data = data[written:]  # the rest of a frame: the writer waits for it
            self.loop.add_writer(fd, self._flush, fd)
        backlog.append((data, lines))
        self.queued += len(data)

    def _flush(self, fd: int) -> None:
        backlog = self.backlog[fd]
        while backlog:
            data, lines = backlog[0]
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                return
            except OSError as exc:
                self.lost(sum(lines for _, lines in backlog), exc)
                self.queued -= sum(len(data) for data, _ in backlog)
                backlog.clear()
                break
            self.queued -= written
            if written < len(data):
                backlog[0] = (data[written:], lines)
                return
            backlog.popleft()
            self.wrote()
        self.loop.remove_writer(fd)
        self.room()

    # ---- both ------------------------------------------------------------------------------------

    def lost(self, lines: int, exc: OSError) -> None:
        self.dropped += lines
        self.reason = exc.strerror or str(exc)

    def wrote(self) -> None:
        """A write went through: if some before it did not, say how many lines were lost (on the loop)."""
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            if self.thread is None:
                self.loop.call_soon(self.on_dropped, dropped, self.reason)
            else:
                self.loop.call_soon_threadsafe(self.on_dropped, dropped, self.reason)

    def room(self) -> None:
        """On the loop: below LOW, the relay reads its workers' pipes again."""
        if self.paused and self.queued < LOW:
            self.paused = False
            self.on_pressure(False)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Write what is queued (for at most `timeout` seconds); whether all was written."""
        if self.thread is not None:
            return self.thread.close(timeout)
        deadline = time.monotonic() + timeout
        for fd, backlog in self.backlog.items():
            if backlog:
                self.loop.remove_writer(fd)
            while backlog and time.monotonic() < deadline:
                select.select([], [fd], [], max(deadline - time.monotonic(), 0))
                self._flush(fd)
                if backlog:
                    self.loop.remove_writer(fd)
            os.set_blocking(fd, True)  # for whatever writes there after the relay (Log, straight to stderr)
        return not any(self.backlog.values())


class Writer:
    """Foreground: the thread that writes the queued lines with blocking writes, in order."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.queue: list[tuple[int, bytes, int]] = []  # (fd, bytes, lines), in order
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="prun log output", daemon=True)
        self.thread.start()

    def put(self, fd: int, data: bytes, lines: int) -> None:
        with self.lock:
            self.queue.append((fd, data, lines))
            self.sink.queued += len(data)
            if not self.wake.is_set():
                self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            with self.lock:
                items, self.queue = self.queue, []
                self.wake.clear()
                if not items and self.closing:
                    return
                if self.closing:
                    self.wake.set()  # closing: no one sets it again; go round until the queue is empty
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
                self.sink.queued -= written
            if self.sink.paused:
                self.sink.loop.call_soon_threadsafe(self.sink.room)

    def _write(self, fd: int, data: bytes, lines: int) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:  # someone made the fd non-blocking (a terminal shared with a shell)
                    select.select([], [fd], [], 1.0)
        except OSError as exc:
            self.sink.lost(lines if len(view) == len(data) else view.tobytes().count(b"\n"), exc)
            return
        self.sink.wrote()

    def close(self, timeout: float) -> bool:
        with self.lock:
            self.closing = True
            self.wake.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def _ignore(paused: bool) -> None:
    """Until a relay is attached."""


def _ignore_drops(lines: int, reason: str) -> None:
    """Until a relay is attached."""
