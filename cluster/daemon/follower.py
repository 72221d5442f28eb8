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

from prun.cluster.daemon.logfiles import IDX_ENTRY, IDX_HEADER, Index, parse_index

Line = tuple[bytes, float | None]
SCAN_MISSES = 3  # rotated files looked for past the last one found (a rotation may be under way)
ROTATED_TRIES = 20  # scans for rotated files the writer renamed while they were read


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
    waited: bool = False  # read once without its index (its writer was writing it): not again

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
    generation = parse_index(os.pread(timeline.idx, IDX_HEADER.size, 0)).generation if timeline.idx >= 0 else 0
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
        current = open_log_file(self.path) if inode and (self.file is None or inode != self.file.inode) else None
        if current is not None and self.file is not None and self.file.generation and not current.generation \
                and not self.file.waited:
            current.close()  # its index is being written (its inode may be an older file's): the next read
            current = None
            self.file.waited = True
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

        Files are told apart by generation and inode, as their indexes note them: no other file has the inode
        of one held open (an index of an older file, compressed since, may name that inode, free again then:
        the newest is the one), and a rotated file read is the one its index names (plain or gzipped), or it
        is looked for again: the writer may be renaming them meanwhile."""
        indexes = scan_indexes(self.path)
        by_inode: dict[int, Index] = {}
        for _, index in sorted(indexes, key=lambda found: found[1].generation):
            by_inode[index.inode] = index
        after = held.generation or (by_inode[held.inode].generation if held.inode in by_inode else 0)
        if held.timeline.idx < 0 and held.inode in by_inode:
            held.timeline = timeline_of(by_inode[held.inode].entries)
        held.waited = True  # its rest is read now, timed or not: it is being left
        self._read_rest(held, lines)
        if not after:
            return  # the file held had no index: which rotated files are newer cannot be told
        before = current.generation or 1 << 62  # (0: a file without an index yet, after a read's wait)
        wanted = set(range(after + 1, before)) if before < 1 << 62 else None
        found: dict[int, tuple[bytes, Index]] = {}
        for _ in range(ROTATED_TRIES):
            for k, index in indexes:
                if after < index.generation < before and index.generation not in found:
                    data = read_rotated(f"{self.path}.{k}", index)
                    if data is not None:
                        found[index.generation] = (data, index)
            if wanted is None or wanted <= set(found):
                break
            indexes = scan_indexes(self.path)  # renamed while read: look again
        for generation in sorted(found):
            data, index = found[generation]
            self._take(data, 0, timeline_of(index.entries), lines)
        if wanted is not None:
            self.missed += len(wanted - set(found))

    def _read_rest(self, file: Opened, lines: list[Line]) -> None:
        if file.timeline.idx < 0 and not file.timeline.offsets and not self._find_times(file):
            return
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

    def _find_times(self, file: Opened) -> bool:
        """A file opened before its index was there: its index now (at the path, or rotated since, found by the
        inode it names). False the first time none is found: its lines wait a read for their times."""
        timeline = index_of(self.path, file.inode)
        if timeline.idx >= 0:
            file.timeline = timeline
            file.generation = parse_index(os.pread(timeline.idx, IDX_HEADER.size, 0)).generation
            return True
        named = [index for _, index in scan_indexes(self.path) if index.inode == file.inode]
        if named:
            newest = max(named, key=lambda index: index.generation)
            file.timeline, file.generation = timeline_of(newest.entries), newest.generation
            return True
        waited, file.waited = file.waited, True
        return waited  # (a file with no index at all, one older prun wrote: read untimed)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def scan_indexes(path: str) -> list[tuple[int, Index]]:
    """(k, index) of each rotated file, <path>.1.idx on (a few missing are passed: a rotation may be moving them)."""
    found = []
    k, misses = 1, 0
    while misses < SCAN_MISSES:
        index = parse_index(read_from_path(f"{path}.{k}.idx"))
        if index.generation:
            found.append((k, index))
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
    found = parse_index(os.pread(timeline.idx, IDX_HEADER.size, 0))
    if not (found.generation and found.inode == inode):
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


def read_rotated(path: str, index: Index) -> bytes | None:
    """The rotated file `index` is the index of, plain or gzipped, if it is still at `path` (checked by inode)."""
    for name in (path, path + ".gz"):
        try:
            fh = open(name, "rb")
        except OSError:
            continue
        with fh:
            inode = os.fstat(fh.fileno()).st_ino
            if inode != (index.gz_inode if name.endswith(".gz") else index.inode):
                continue
            data = fh.read()
        return gzip.decompress(data) if name.endswith(".gz") else data
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
