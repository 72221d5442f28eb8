"""The output relay of a master (or a fork-mode supervisor): every worker's lines whole, from pipes of its own.

Each worker (or fork-mode instance) writes its stdout and stderr (and, with --access-log-file, its access
log) into pipes of its own. The relay reads them on the loop, makes whole lines per pipe (lines.py),
formats them (text as they are; --log-format json: one record per line or traceback, logformat.py) and
queues them to the Sink (logsink.py), the only writer of the master's stdout and stderr. The master's own
lines go the same way: Log writes through `own`, and whatever else the master prints on sys.stdout or
sys.stderr is made into lines of its own. So no line is torn, or mixed with another process's, whatever a
process does: print unbuffered, os.write a line in parts, write a megabyte without a newline, exit mid-line.

The relay runs under the daemon (framed, for its log writer), with --log-format json, --log-file and
--access-log-file. In the foreground without them, workers write to the master's stdout and stderr
directly: a terminal shows what they write as they write it.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from prun.cluster.lines import Item, Lines, text
from prun.cluster.logformat import Records, Tracebacks
from prun.cluster.logframe import ACCESS, ERR, OUT
from prun.cluster.logsink import Sink

if TYPE_CHECKING:
    from prun.cluster.config import Config
    from prun.cluster.log import Log

READ_SIZE = 65536
CLOSE_DRAIN = 4 << 20  # at exit, bytes still read from a pipe that something keeps writing
KINDS = {"stdout": OUT, "stderr": ERR, "access": ACCESS}
MARKER_ROOM = 64  # bytes a piece's marker may take


@dataclass(eq=False)
class Feed:
    """One pipe of a worker (or the master's own prints on one stream): whole lines from its bytes."""

    stream: str  # stdout | stderr | access
    worker: int | None  # its slot (instance); None: the master's own
    pid: int
    lines: Lines
    marker: bytes  # before every piece of a cut line but the first
    fd: int = -1
    tracebacks: Tracebacks | None = None  # --log-format json: a traceback is one record
    kind: int = field(init=False)

    def __post_init__(self) -> None:
        self.kind = KINDS[self.stream]

    @property
    def source(self) -> int:
        return 0 if self.worker is None else self.worker + 1


class OutputRelay:
    """Reads its processes' pipes, and writes whole lines, theirs and the master's own, through one Sink."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Sink, max_line: int, records: Records | None = None,
                 label: str = "worker", own_label: str = "master") -> None:
        self.loop = loop
        self.sink = sink
        self.max_line = max_line
        self.records = records
        self.label = label
        self.feeds: dict[int, Feed] = {}  # by fd
        self.paused = False
        self.thread = threading.get_ident()
        own_marker = f"prun: {own_label} continued: ".encode()
        self.own_feeds = {stream: Feed(stream, None, os.getpid(), Lines(max_line), own_marker,
                                       tracebacks=Tracebacks() if records else None) for stream in ("stdout", "stderr")}
        self.saved: tuple[TextIO, TextIO] | None = None
        sink.on_pressure = self.pressure
        self.on_dropped: Callable[[int, str], None] = lambda lines, reason: None
        sink.on_dropped = lambda lines, reason: self.on_dropped(lines, reason)

    # ---- sources ---------------------------------------------------------------------------------

    def attach(self, fds: dict[int, str], worker: int, pid: int) -> None:
        """Read a worker's (or instance's) pipes: {read end: 'stdout' | 'stderr' | 'access'}."""
        marker = f"prun: {self.label} {worker} continued: ".encode()
        for fd, stream in fds.items():
            feed = Feed(stream, worker, pid, Lines(self.max_line), marker, fd,
                        Tracebacks() if self.records and stream != "access" else None)
            self.feeds[fd] = feed
            os.set_blocking(fd, False)
            if not self.paused:
                self.loop.add_reader(fd, self._read, feed)

    def own(self, stream: str, line: bytes) -> None:
        """A whole line (or several) of the master's own, formatted already (Log)."""
        if threading.get_ident() != self.thread:
            self.loop.call_soon_threadsafe(self.own, stream, line)
            return
        feed = self.own_feeds[stream]
        self.sink.put(feed.kind, 0, line, line.count(b"\n"), own=True)

    def capture_own_output(self) -> None:
        """Whatever the master prints on sys.stdout and sys.stderr goes through the relay too, as whole lines."""
        self.saved = (sys.stdout, sys.stderr)
        for stream in ("stdout", "stderr"):
            raw = _Into(self, self.own_feeds[stream])
            setattr(sys, stream, io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                                                  errors="backslashreplace", line_buffering=True))

    def _own_raw(self, feed: Feed, data: bytes) -> None:
        if threading.get_ident() != self.thread:
            self.loop.call_soon_threadsafe(self._own_raw, feed, data)
            return
        self._emit(feed, feed.lines.feed(data), own=True)

    # ---- reading ---------------------------------------------------------------------------------

    def _read(self, feed: Feed) -> None:
        data = read_some(feed.fd)
        if data is None:
            return
        if data:
            self._emit(feed, feed.lines.feed(data))
            return
        self._emit(feed, feed.lines.finish(), eof=True)  # EOF: the worker and all it started closed the pipe
        self._detach(feed)

    def _detach(self, feed: Feed) -> None:
        if self.feeds.pop(feed.fd, None) is not None:
            self.loop.remove_reader(feed.fd)
            os.close(feed.fd)

    def pressure(self, paused: bool) -> None:
        """The sink has too much queued (True) or room again (False): stop or go on reading the workers' pipes."""
        self.paused = paused
        for fd, feed in self.feeds.items():
            if paused:
                self.loop.remove_reader(fd)
            else:
                self.loop.add_reader(fd, self._read, feed)

    # ---- writing ---------------------------------------------------------------------------------

    def _emit(self, feed: Feed, items: list[Item], eof: bool = False, own: bool = False) -> None:
        if self.records is None:
            if items:
                data, lines = text(items, feed.marker)
                self.sink.put(feed.kind, feed.source, data, lines, own)
            return
        chunks: list[bytes] = []
        now = time.time()
        for data, part, more in items:
            if part < 0:
                for line in data.decode("utf-8", "backslashreplace").split("\n")[:-1]:
                    self._json_line(feed, line, now, chunks)
            else:
                self._settle(feed, now, chunks, eof=True)
                extra = {"part": part, "partial": True} if more else ({"part": part} if part else None)
                chunks.append(self.records.line(data.decode("utf-8", "backslashreplace"), feed.worker, feed.pid,
                                                feed.stream, now, extra))
        self._settle(feed, now, chunks, eof)
        if chunks:
            self.sink.put(feed.kind, feed.source, b"".join(chunks), len(chunks), own)

    def _json_line(self, feed: Feed, line: str, now: float, chunks: list[bytes]) -> None:
        assert self.records is not None
        if feed.tracebacks is not None:
            done, taken = feed.tracebacks.push(line)
            if done is not None:
                chunks.append(self.records.traceback(done, feed.worker, feed.pid, feed.stream, now))
            if taken:
                return
        chunks.append(self.records.line(line, feed.worker, feed.pid, feed.stream, now))

    def _settle(self, feed: Feed, now: float, chunks: list[bytes], eof: bool) -> None:
        if feed.tracebacks is not None and self.records is not None:
            done = feed.tracebacks.settle(eof)
            if done is not None:
                chunks.append(self.records.traceback(done, feed.worker, feed.pid, feed.stream, now))

    # ---- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        """At exit: what the pipes hold now, the last partial lines, then every queued line written."""
        for feed in list(self.feeds.values()):
            taken = 0
            while taken < CLOSE_DRAIN:
                data = read_some(feed.fd)
                if not data:
                    break
                taken += len(data)
                self._emit(feed, feed.lines.feed(data))
            self._emit(feed, feed.lines.finish(), eof=True)
            self._detach(feed)
        if self.saved is not None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            sys.stdout, sys.stderr = self.saved
            self.saved = None
        for feed in self.own_feeds.values():
            self._emit(feed, feed.lines.finish(), eof=True, own=True)
        self.sink.close()


class _Into(io.RawIOBase):
    """sys.stdout or sys.stderr of a master whose output the relay writes."""

    def __init__(self, relay: OutputRelay, feed: Feed) -> None:
        super().__init__()
        self.relay = relay
        self.feed = feed

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        self.relay._own_raw(self.feed, chunk)
        return len(chunk)


def read_some(fd: int) -> bytes | None:
    """What a worker's pipe holds (b"": EOF, or an error that ends it the same way); None: nothing yet."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def for_master(config: Config, log: Log, loop: asyncio.AbstractEventLoop, under_daemon: bool) -> OutputRelay | None:
    """The relay a master needs (under the daemon, --log-format json, --log-file, --access-log-file), or None."""
    json_format = config.log_format == "json"
    if not (under_daemon or json_format or config.log_file or config.access_log_file):
        return None
    access = os.path.abspath(config.access_log_file) if config.access_log_file else ""
    access_fd = -1
    if access and not under_daemon:
        access_fd = open_access_log(access)
    sink = Sink(loop, framed=under_daemon, pipe_size=pipe_size(config.log_max_line, json_format), access_fd=access_fd)
    records = Records(config.name or config.app, config.log_json_time) if json_format else None
    relay = OutputRelay(loop, sink, config.log_max_line, records)
    relay.on_dropped = lambda lines, reason: log.warning(f"{lines} log lines were dropped ({reason})")
    if access and under_daemon:
        sink.announce_access(access)
    relay.capture_own_output()
    log.output = relay
    return relay


def for_supervisor(loop: asyncio.AbstractEventLoop, name: str, log_format: str, json_time: str,
                   max_line: int) -> OutputRelay:
    """The relay of a fork-mode supervisor under the daemon: its instances' lines, framed for the log writer."""
    json_format = log_format == "json"
    sink = Sink(loop, framed=True, pipe_size=pipe_size(max_line, json_format))
    relay = OutputRelay(loop, sink, max_line, Records(name, json_time) if json_format else None,
                        label="instance", own_label="supervisor")
    relay.on_dropped = lambda lines, reason: print(f"prun: warning: {lines} log lines were dropped ({reason})",
                                                   file=sys.stderr, flush=True)
    relay.capture_own_output()
    return relay


def pipe_size(max_line: int, json_format: bool) -> int:
    """What to ask of the log writer's pipes: room for frames of several lines (JSON ones grow)."""
    return min(1 << 20, max(256 << 10, (8 if json_format else 4) * (max_line + MARKER_ROOM)))


def open_access_log(path: str) -> int:
    """--access-log-file in the foreground: the master appends to it (another user's link or file refused)."""
    from prun.cluster.errors import PrunError
    from prun.cluster.logopen import open_log

    try:
        return open_log(path, mode=0o640)
    except OSError as exc:
        raise PrunError(f"cannot open access log file {path}: {exc.strerror}") from None


def reopen_access_log(relay: OutputRelay, path: str) -> None:
    """USR1 in the foreground: the access log file anew (after logrotate moved it), on the same fd."""
    fd = open_access_log(path)
    try:
        os.dup2(fd, relay.sink.access_fd)
    finally:
        os.close(fd)
