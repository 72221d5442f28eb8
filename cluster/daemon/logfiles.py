"""An app's log files under the daemon: written by whole lines, rotated between lines, each with its time index.

    <name>-out.log      the file         <name>-out.log.1  .2.gz ...  rotated (--log-retain, --log-compress)
    <name>-out.log.idx  its time index   <name>-out.log.1.idx ...     rotated with it, never compressed

One process writes them: the app's log writer (logwriter.py). Rotation renames <path> to <path>.1 (the
older ones move up, the one past --log-retain goes) between two whole lines, never inside one: a line
that arrived in pieces is finished in the file it began in.

The index (`.idx`) says when the writer received each part of the file: a header (magic, the file's
generation, the file's inode, and its gzip's once compressed), then 16 bytes per write (the offset the write
began at, the time). The generation goes up by one at each rotation, so a reader that followed generation G
finds, after any number of rotations, which rotated files came after it, and the inodes tell it which file is
which while rotations rename them under it (`prun logs -f`, follower.py); the times stamp the lines `prun
logs --json` prints.

A full disk (ENOSPC, EDQUOT, EFBIG) never blocks the writer: lines are dropped and counted, a short write
is truncated back (no half line stays), one warning goes to the writer's stderr (the daemon's log), and
once a write succeeds again a line in the file says how many were dropped.

A log path that is not a regular file (`/dev/null`, a terminal, a FIFO someone reads) is written as it is:
no index, no rotation, nothing created beside it.

Log files are opened through `open_log` (cluster/logopen.py): another user's symlink at a log path is not
followed, another user's file is not written into (root is no other user). A refused first open raises
LogFileRefused; a refused reopen keeps the old file.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prun.cluster.logopen import LogFileRefused, open_log

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
IDX_MAGIC = b"prunidx1"
IDX_HEADER = struct.Struct("<8sQQQ")  # magic, generation, the log file's inode, its gzip's (0: not compressed)
GZ_INODE_AT = 24
IDX_ENTRY = struct.Struct("<Qd")  # offset in the log file, time (seconds since the epoch)


@dataclass
class Rotation:
    """When and how a log file rotates."""

    max_size: int = 10 << 20  # bytes (0: never by size)
    retain: int = 5  # rotated files kept
    compress: bool = False  # gzip rotated files but the newest
    daily: bool = False  # also rotate when the day changes

    def arguments(self) -> list[str]:
        return (["--max-size", str(self.max_size), "--retain", str(self.retain)]
                + (["--compress"] if self.compress else []) + (["--daily"] if self.daily else []))


def rotated(path: str, retain: int) -> list[str]:
    """The rotated files of `path` that exist, newest first (plain or gzipped)."""
    found = []
    for k in range(1, retain + 2):
        for suffix in ("", ".gz"):
            if os.path.exists(f"{path}.{k}{suffix}"):
                found.append(f"{path}.{k}{suffix}")
    return found


def rotated_indexes(path: str, retain: int) -> list[str]:
    """The time indexes of the rotated files of `path` that exist."""
    return [f"{path}.{k}.idx" for k in range(1, retain + 2) if os.path.exists(f"{path}.{k}.idx")]


@dataclass
class Index:
    """A log file's time index: its generation, the inodes it was (plain, gzipped), (offset, time) per write."""

    generation: int = 0  # 0: no index
    inode: int = 0
    gz_inode: int = 0
    entries: list[tuple[int, float]] = field(default_factory=list)


def read_index(path: str) -> Index:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return Index()
    return parse_index(data)


def parse_index(data: bytes) -> Index:
    if len(data) < IDX_HEADER.size or not data.startswith(IDX_MAGIC):
        return Index()
    _, generation, inode, gz_inode = IDX_HEADER.unpack_from(data)
    body = data[IDX_HEADER.size:]
    body = body[:len(body) - len(body) % IDX_ENTRY.size]
    return Index(generation, inode, gz_inode, list(IDX_ENTRY.iter_unpack(body)))


class LogFile:
    """One log file, written by whole lines only, rotated between lines, with its time index."""

    def __init__(self, path: str, rotation: Rotation, on_open: Callable[[LogFile], None] | None = None) -> None:
        self.path = path
        self.rotation = rotation
        self.on_open = on_open  # the writer's journal notes each file it may write into (logwriter.py)
        self.fd = -1
        self.idx = -1
        self.inodes = (0, 0)  # of the file and of its index
        self.lengths = [0, 0]  # how long they are, as this writer made them (for its journal: no fstat)
        self.generation = 0
        self.day = ""
        self.open_line = False  # the file ends inside a line: the next write finishes it first, here
        self.owner: object = None  # what wrote that unfinished line (only it may write here until it ends)
        self.dropped = 0  # lines lost to a full disk, not yet reported
        self.reason = ""
        self.compressor: threading.Thread | None = None
        self.special = False  # not a regular file (/dev/null): written as it is, never rotated nor indexed
        self.open()

    def open(self, generation: int = 0) -> None:
        """Open the file (again); a refused reopen keeps the old file (a refused first open raises)."""
        try:
            fd = open_log(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)  # (read: does it end inside a line?)
        except LogFileRefused as exc:
            if self.fd < 0:
                raise
            print(f"prun: warning: {exc.strerror}; still writing to the file it was", file=sys.stderr, flush=True)
            return
        self.close_fds()
        self.fd = fd
        st = os.fstat(self.fd)
        self.owner = None
        self.special = not stat.S_ISREG(st.st_mode)
        if self.special:
            self.open_line = False
            self.inodes, self.lengths = (0, 0), [0, 0]  # nothing the journal could cut back
            return
        self.day = time.strftime("%Y-%m-%d", time.localtime(st.st_mtime if st.st_size else time.time()))
        self.open_line = bool(st.st_size) and os.pread(self.fd, 1, st.st_size - 1) != b"\n"
        self.open_index(st.st_ino, generation)
        self.inodes = (st.st_ino, os.fstat(self.idx).st_ino if self.idx >= 0 else 0)
        self.lengths = [st.st_size, os.fstat(self.idx).st_size if self.idx >= 0 else 0]
        if self.on_open is not None:
            self.on_open(self)

    def open_index(self, inode: int, generation: int) -> None:
        """The file's time index: kept if it is this file's, else begun anew with a new generation."""
        try:
            self.idx = open_log(self.path + ".idx", os.O_RDWR | os.O_APPEND | os.O_CREAT)
        except OSError as exc:  # (another user's link there): the lines are written all the same, untimed
            print(f"prun: warning: {self.path}.idx: {exc.strerror}; writing no time index", file=sys.stderr,
                  flush=True)
            return
        found = parse_index(os.pread(self.idx, IDX_HEADER.size, 0))
        if found.generation and found.inode == inode and not generation:
            self.generation = found.generation
            return
        self.generation = generation or max(found.generation, self.newest_rotated_generation(), self.generation) + 1
        os.ftruncate(self.idx, 0)
        os.write(self.idx, IDX_HEADER.pack(IDX_MAGIC, self.generation, inode, 0))

    def end_line(self) -> None:
        """The file ends inside a line nobody will finish (its writer is gone): end it, so the next one starts whole."""
        if self.open_line:
            self._append(b"\n", time.time(), os.fstat(self.fd).st_size)

    def newest_rotated_generation(self) -> int:
        return read_index(f"{self.path}.1.idx").generation

    def sizes(self) -> list[tuple[int, int]]:
        """[(inode, length)] of the file and its index as this writer made them (the writer's journal; a file
        `prun flush` emptied meanwhile is shorter: the journal never cuts a file longer)."""
        return [(inode, length) for inode, length in zip(self.inodes, self.lengths) if inode]

    def write(self, data: bytes, when: float, progress: Callable[[int], None] | None = None,
              rotate: bool = True) -> bool:
        """Append `data` (whole lines; it may begin with the rest of a line the file ends in, and end inside one),
        rotating between lines as needed (not if `rotate` is false: see rotate_before); `progress(lines)` is
        told, before each rotation, how many of data's lines are in the file. False if the disk refused some
        (they are counted)."""
        if self.special:
            return self._append(data, when, 0)
        size = os.fstat(self.fd).st_size  # not kept: `prun flush` may truncate the file under us
        if not rotate:
            return self._append(data, when, size)
        done = 0
        if self.open_line:  # the rest of a line already begun here goes here, whatever the size
            end = data.find(b"\n") + 1 or len(data)
            if not self._append(data[:end], when, size):
                self.dropped += data.count(b"\n", end)
                return False
            size += end
            done = int(data[end - 1:end] == b"\n")
            data = data[end:]
        if size and self.rotation.daily and time.strftime("%Y-%m-%d") != self.day and data:
            self._rotate_after(done, progress)
            size = 0
        limit = self.rotation.max_size
        while limit and data and size + len(data) > limit:
            cut = data.rfind(b"\n", 0, max(limit - size, 0)) + 1  # the lines that still fit
            if not cut and not size:
                cut = data.find(b"\n") + 1 or len(data)  # one line longer than a whole file: alone in one
            if cut and not self._append(data[:cut], when, size):
                self.dropped += data.count(b"\n", cut)
                return False
            done += data.count(b"\n", 0, cut)
            data = data[cut:]
            if not data or self.open_line:
                return True
            self._rotate_after(done, progress)
            size = 0
        return self._append(data, when, size) if data else True

    def rotate_before(self, incoming: int) -> None:
        """Rotate now if `incoming` more bytes would take the file past --log-max-size (or the day changed):
        for a file written without rotating inside a write (the combined file), which may pass the size by
        one write's bytes."""
        if self.special or self.open_line:
            return
        size = os.fstat(self.fd).st_size
        limit = self.rotation.max_size
        if size and ((limit and size + incoming > limit)
                     or (self.rotation.daily and time.strftime("%Y-%m-%d") != self.day)):
            self.rotate()

    def _rotate_after(self, done: int, progress: Callable[[int], None] | None) -> None:
        if progress is not None:
            progress(done)
        self.rotate()

    def _append(self, data: bytes, when: float, size: int) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            if not self.special:
                os.ftruncate(self.fd, size)  # a half-written line must not stay; truncating frees space too
            self.lengths[0] = size
            if not self.dropped:
                print(f"prun: warning: {self.path}: {exc.strerror}: dropping log lines until it can be written",
                      file=sys.stderr, flush=True)
            self.dropped += data.count(b"\n")
            self.reason = exc.strerror or str(exc)
            return False
        self.open_line = not data.endswith(b"\n")
        self.lengths[0] = size + len(data)
        if self.idx >= 0:
            try:
                os.write(self.idx, IDX_ENTRY.pack(size, when))
                self.lengths[1] += IDX_ENTRY.size
            except OSError:  # a full disk: the lines are there, their time is not
                self.lengths[1] = os.fstat(self.idx).st_size
        return True

    def rotate(self) -> None:
        """<path> becomes <path>.1, each older one moves up one, the oldest past --log-retain goes."""
        retain = max(self.rotation.retain, 0)
        if self.compressor is not None:
            self.compressor.join()
            self.compressor = None
        for k, suffix in self.rotated_now():
            old = f"{self.path}.{k}{suffix}"
            if k >= retain:
                os.unlink(old)
            else:
                os.replace(old, f"{self.path}.{k + 1}{suffix}")
        for suffix in ("", ".idx"):
            try:
                if retain:
                    os.replace(self.path + suffix, f"{self.path}.1{suffix}")
                else:
                    os.unlink(self.path + suffix)
            except FileNotFoundError:  # moved away already (an external logrotate without USR1)
                pass
        self.open(self.generation + 1)
        second = f"{self.path}.2"
        if self.rotation.compress and os.path.exists(second):
            self.compressor = threading.Thread(target=compress, args=(second,), daemon=True)
            self.compressor.start()

    def rotated_now(self) -> list[tuple[int, str]]:
        """(k, suffix) of <path>.k, .k.gz, .k.idx as they are, the oldest first (one listing, whatever --log-retain)."""
        directory, base = os.path.split(self.path)
        found: set[tuple[int, str]] = set()
        for name in os.listdir(directory or "."):
            if name.startswith(base + "."):
                number, _, suffix = name[len(base) + 1:].partition(".")
                if number.isdigit() and suffix in ("", "gz", "idx"):
                    found.add((int(number), "." + suffix if suffix else ""))
                elif number.isdigit() and suffix == "gz.tmp":  # a compression cut short (a killed writer): the
                    os.unlink(os.path.join(directory, name))  # plain file is whole still
        for k, suffix in list(found):
            if suffix == ".gz" and (k, "") in found:  # compressed, and killed before the plain one was removed
                os.unlink(f"{self.path}.{k}")
                found.discard((k, ""))
        return sorted(found, reverse=True)

    def close_fds(self) -> None:
        for fd in (self.fd, self.idx):
            if fd >= 0:
                os.close(fd)
        self.fd = self.idx = -1

    def close(self) -> None:
        if self.compressor is not None:
            self.compressor.join()
            self.compressor = None
        self.close_fds()  # (once: a refused worker's file is the app's file under a second name)


def compress(path: str) -> None:
    """path -> path.gz, atomically (a reader sees the plain file or the whole gzip, never half of one); its
    index notes the gzip's inode before the plain file goes."""
    with (open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as src,
          open(open_log(path + ".gz.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as raw,
          gzip.GzipFile(filename=os.path.basename(path), mode="wb", fileobj=raw) as dst):
        shutil.copyfileobj(src, dst)
        gz_inode = os.fstat(raw.fileno()).st_ino
    os.replace(path + ".gz.tmp", path + ".gz")
    try:
        idx = open_log(path + ".idx", os.O_RDWR)
    except OSError:
        pass
    else:
        try:
            if parse_index(os.pread(idx, IDX_HEADER.size, 0)).generation:
                os.pwrite(idx, gz_inode.to_bytes(8, "little"), GZ_INODE_AT)
        finally:
            os.close(idx)
    os.unlink(path)


def worker_file(path: str, slot: int) -> str:
    """NAME-out.log -> NAME-out-3.log: worker 3's file, with --no-merge-logs."""
    root, ext = os.path.splitext(path)
    return f"{root}-{slot}{ext}"


def worker_files(path: str) -> list[str]:
    """The per-worker files of `path` that exist, by slot."""
    root, ext = os.path.splitext(path)
    directory = os.path.dirname(path) or "."
    prefix = os.path.basename(root) + "-"
    found = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        middle = name[len(prefix):-len(ext)] if ext else name[len(prefix):]
        if name.startswith(prefix) and name.endswith(ext) and middle.isdigit():
            found.append((int(middle), os.path.join(directory, name)))
    return [p for _, p in sorted(found)]


class Files(dict[str, LogFile]):
    """The open log files by path, opened on first use."""

    def __init__(self, rotation: Rotation, on_open: Callable[[LogFile], None] | None = None) -> None:
        super().__init__()
        self.rotation = rotation
        self.on_open = on_open

    def get(self, path: str) -> LogFile:  # type: ignore[override]
        if path not in self:
            self[path] = LogFile(path, self.rotation, self.on_open)
        return self[path]
