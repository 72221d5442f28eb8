"""Reading an app's log files back (`prun logs`, `prun monit`): their tail, then what is written next.

A `Follower` holds the file it reads open, so a rotation (a rename), a compression (a new file, the old one
removed) or several of them between two reads lose nothing: it reads the rest of its file from the open
descriptor, then every file rotated after it, in order, found by their generation in their time index
(logfiles.py: each rotation adds one), then the new file. A truncation (`prun flush`) starts it again at
the file's beginning. A rotated file removed (past --log-retain) before it could be read is counted.

Each line comes with the time the log writer received it, from the file's index (None where a file has
none: one written before prun kept indexes).
"""

from __future__ import annotations

import bisect
import gzip
import os
from dataclasses import dataclass, field

from prun.cluster.daemon.logfiles import IDX_ENTRY, IDX_HEADER, parse_index

Line = tuple[bytes, float | None]
SCAN_MISSES = 3  # rotated files looked for past the last one found (a rotation may be under way)


@dataclass(eq=False)
class Timeline:
    """The times of a file's writes (offset -> time), read from its index as it grows."""

    idx: int = -1  # its index, held open (-1: none)
    read: int = IDX_HEADER.size
    offsets: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def update(self) -> None:
        if self.idx < 0:
            return
        data = os.pread(self.idx, 1 << 24, self.read)
        data = data[:len(data) - len(data) % IDX_ENTRY.size]
        self.read += len(data)
        for offset, when in IDX_ENTRY.iter_unpack(data):
            if self.offsets and offset < self.offsets[-1]:  # emptied (prun flush): offsets begin again
                self.offsets.clear()
                self.times.clear()
            self.offsets.append(offset)
            self.times.append(when)

    def at(self, offset: int) -> float | None:
        """When the byte at `offset` was received (the write that began at or before it)."""
        k = bisect.bisect_right(self.offsets, offset) - 1
        return self.times[k] if k >= 0 else None

    def forget_before(self, offset: int) -> None:
        k = bisect.bisect_right(self.offsets, offset) - 1
        if k > 0:
            del self.offsets[:k]
            del self.times[:k]

    def close(self) -> None:
        if self.idx >= 0:
            os.close(self.idx)
            self.idx = -1


@dataclass(eq=False)
class Opened:
    """A log file held open: its descriptor, inode, generation and times."""

    fd: int
    inode: int
    generation: int
    timeline: Timeline

    def close(self) -> None:
        os.close(self.fd)
        self.timeline.close()


def open_log_file(path: str) -> Opened | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    inode = os.fstat(fd).st_ino
    timeline = index_of(path, inode)
    generation = parse_index(os.pread(timeline.idx, IDX_HEADER.size, 0))[0] if timeline.idx >= 0 else 0
    return Opened(fd, inode, generation, timeline)


class Follower:
    """Reads a log file on from an offset, across rotations (compressed or not) and truncations."""

    def __init__(self, path: str, offset: int | None = None) -> None:
        self.path = path
        self.file = open_log_file(path)
        size = os.fstat(self.file.fd).st_size if self.file else 0
        self.offset = offset if offset is not None else size
        self.partial = b""
        self.partial_time: float | None = None
        self.missed = 0  # rotated files gone before they were read

    def read(self) -> list[Line]:
        """The whole lines written since the last read, each with the time it was received."""
        lines: list[Line] = []
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            inode = 0  # between a rename and the new file: read on in the one held
        if self.file is not None and inode == self.file.inode and self.file.timeline.idx < 0:
            self.file.timeline = index_of(self.path, inode)  # written just after the file appeared
            if self.file.timeline.idx >= 0:
                self.file.generation = parse_index(os.pread(self.file.timeline.idx, IDX_HEADER.size, 0))[0]
        current = open_log_file(self.path) if inode and (self.file is None or inode != self.file.inode) else None
        if current is not None:  # rotated (maybe several times), or created since
            if self.file is not None:
                self._rotated(self.file, current, lines)
                self.file.close()
            self.file, self.offset = current, 0
        elif self.file is None:
            return lines
        elif inode and os.fstat(self.file.fd).st_size < self.offset:
            self.offset = 0  # truncated (prun flush)
            self.partial = b""
        self._read_rest(self.file, lines)
        return lines

    def _rotated(self, held: Opened, current: Opened, lines: list[Line]) -> None:
        """The rest of the file held, then every file rotated after it and before `current`, in order.

        Files are told apart by the inode in their index's header (a rotated file's index keeps the inode
        of the file it was, compressed or not): no other file has the inode of one held open. An index of an
        older, compressed file may name it too (the inode was free, and used again): the newest is the one."""
        rotated = scan_indexes(self.path)
        by_inode: dict[int, tuple[int, list[tuple[int, float]]]] = {}
        for _, generation, inode, entries in sorted(rotated, key=lambda found: found[1]):
            by_inode[inode] = (generation, entries)
        after = held.generation or by_inode.get(held.inode, (0, []))[0]
        if held.timeline.idx < 0 and held.inode in by_inode:
            held.timeline = timeline_of(by_inode[held.inode][1])
        self._read_rest(held, lines)
        if not after:
            return  # the file held had no index: which rotated files are newer cannot be told
        before = current.generation  # (0: its index is not written yet; rotated since, if an index names it)
        if not before:
            before = by_inode[current.inode][0] if by_inode.get(current.inode, (0, []))[0] > after else 1 << 62
        newer = sorted((generation, k, entries) for k, generation, _, entries in rotated if after < generation < before)
        for _, k, entries in newer:
            data = read_rotated(f"{self.path}.{k}")
            if data is not None:
                self._take(data, 0, timeline_of(entries), lines)
        if before < 1 << 62:
            self.missed += max(before - after - 1 - len(newer), 0)

    def _read_rest(self, file: Opened, lines: list[Line]) -> None:
        data = read_from(file.fd, self.offset)
        if data:
            file.timeline.update()
            self._take(data, self.offset, file.timeline, lines)
            self.offset += len(data)
            file.timeline.forget_before(self.offset)

    def _take(self, data: bytes, offset: int, timeline: Timeline, lines: list[Line]) -> None:
        """Lines out of `data`, which begins at `offset` of a file whose times are `timeline`."""
        start = 0
        if not self.partial:
            self.partial_time = timeline.at(offset)
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self.partial:
                lines.append((self.partial + data[start:end], self.partial_time))
                self.partial = b""
            else:
                lines.append((data[start:end], timeline.at(offset + start)))
            start = end + 1
        if start < len(data):
            if not self.partial:
                self.partial_time = timeline.at(offset + start)
            self.partial += data[start:]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def scan_indexes(path: str) -> list[tuple[int, int, int, list[tuple[int, float]]]]:
    """(k, generation, inode, entries) of each rotated file's index, <path>.1.idx on (a few missing are passed:
    a rotation may be moving them)."""
    found = []
    k, misses = 1, 0
    while misses < SCAN_MISSES:
        generation, inode, entries = parse_index(read_from_path(f"{path}.{k}.idx"))
        if generation:
            found.append((k, generation, inode, entries))
            misses = 0
        else:
            misses += 1
        k += 1
    return found


def timeline_of(entries: list[tuple[int, float]]) -> Timeline:
    timeline = Timeline()
    timeline.offsets = [offset for offset, _ in entries]
    timeline.times = [when for _, when in entries]
    return timeline


def index_of(path: str, inode: int) -> Timeline:
    """The times of the file at `path` (inode `inode`), its index held open; none if it has no index yet."""
    timeline = Timeline()
    try:
        timeline.idx = os.open(path + ".idx", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return timeline
    found, indexed, _ = parse_index(os.pread(timeline.idx, IDX_HEADER.size, 0))
    if not (found and indexed == inode):
        timeline.close()
    return timeline


def read_from(fd: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def read_from_path(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def read_rotated(path: str) -> bytes | None:
    """A rotated file, plain or gzipped (the plain one is removed only once the gzip is whole)."""
    for attempt in (path, path + ".gz", path):
        try:
            with open(attempt, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        return gzip.decompress(data) if attempt.endswith(".gz") else data
    return None


def tail(path: str, count: int) -> tuple[list[Line], int]:
    """The last `count` lines of a file with their times, and the offset its end is at."""
    file = open_log_file(path)
    if file is None:
        return [], 0
    try:
        end = os.fstat(file.fd).st_size
        start = max(0, end - max(count, 1) * 512)
        data = os.pread(file.fd, end - start, start)
        file.timeline.update()
    finally:
        file.close()
    lines: list[Line] = []
    offset = start
    for raw in data.split(b"\n"):
        lines.append((raw, file.timeline.at(offset)))
        offset += len(raw) + 1
    if lines and lines[-1][0] == b"":
        lines.pop()
    if start and lines:
        lines.pop(0)  # begun before `start`: not a whole line
    return (lines[-count:] if count else []), end
