"""An app's log files under the daemon: one writer process per master, rotation, and reading them back.

    master + workers ──stdout pipe──▶ log writer ──▶ <name>-out.log  (.1 .2.gz ... on rotation)
                     ──stderr pipe──▶  (this file) ──▶ <name>-err.log

The master and its workers write into two pipes; one writer process (started by the daemon, in its own
session, so it outlives neither the master nor depends on the daemon) reads them and is the only process
that writes the files. Because it is the only writer, a rotation (rename, open anew) happens between two
whole lines: a line written in one write(2) of at most PIPE_BUF bytes (4096, atomic on a pipe) appears
exactly once, whole, in exactly one file. When every writer has closed the pipes (the master and its
workers are gone), it writes what is left and exits. A flock on the out file's `.lock` keeps a new writer
(a restarted master's) from writing before the last one has finished.

A full disk (ENOSPC, EDQUOT, EFBIG) never blocks the pipes: lines are dropped and counted, a short write
is truncated back (no half line stays), one warning goes to the writer's stderr (the daemon's log), and
once a write succeeds again a line in the err log says how many were dropped. SIGUSR1 reopens the files
(after an external logrotate moved them).

Log files are opened through `open_log` (cluster/logopen.py: by this writer, a foreground master's
--log-file, `prun flush`; the daemon should create them with it too): another user's symlink at a log path is not followed, another
user's file is not written into (root is no other user). The writer refuses to start on one (one line on
its stderr, exit 1); on a reopen it keeps its old file.

Rotated files are <path>.1 (plain: the newest, still being read by followers), then <path>.2[.gz] ...
up to --log-retain; `Follower` reads a file on across a rotation, from where it was.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import gzip
import os
import selectors
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass

from prun.cluster.logopen import LogFileRefused, open_log

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
READ_SIZE = 65536
LOCK_WAIT = 5.0  # seconds a new writer waits for the last one to finish


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


class LogFile:
    """One log file, written by whole lines only, rotated between lines."""

    def __init__(self, path: str, rotation: Rotation) -> None:
        self.path = path
        self.rotation = rotation
        self.fd = -1
        self.day = ""
        self.dropped = 0  # lines lost to a full disk, not yet reported
        self.reason = ""
        self.compressor: threading.Thread | None = None
        self.open()

    def open(self) -> None:
        """Open the file (again); a refused reopen keeps the old file (a refused first open raises)."""
        try:
            fd = open_log(self.path)
        except LogFileRefused as exc:
            if self.fd < 0:
                raise
            print(f"prun: warning: {exc.strerror}; still writing to the file it was", file=sys.stderr, flush=True)
            return
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        st = os.fstat(self.fd)
        self.day = time.strftime("%Y-%m-%d", time.localtime(st.st_mtime if st.st_size else time.time()))

    def write(self, data: bytes) -> bool:
        """Append whole lines, rotating between two lines as needed; False (and counted) if the disk refused."""
        size = os.fstat(self.fd).st_size  # not kept: `prun flush` may truncate the file under us
        if size and self.rotation.daily and time.strftime("%Y-%m-%d") != self.day:
            self.rotate()
            size = 0
        limit = self.rotation.max_size
        while limit and size + len(data) > limit:
            cut = data.rfind(b"\n", 0, max(limit - size, 0)) + 1  # the lines that still fit
            if not cut and not size:
                cut = data.find(b"\n") + 1 or len(data)  # one line longer than a whole file: alone in one
            if cut and not self._append(data[:cut], data.count(b"\n", 0, cut), size):
                self.dropped += data.count(b"\n", cut)
                return False
            data = data[cut:]
            if not data:
                return True
            self.rotate()
            size = 0
        return self._append(data, data.count(b"\n"), size) if data else True

    def _append(self, data: bytes, lines: int, size: int) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            os.ftruncate(self.fd, size)  # a half-written line must not stay; truncating frees space too
            if not self.dropped:
                print(f"prun: warning: {self.path}: {exc.strerror}: dropping log lines until it can be written",
                      file=sys.stderr, flush=True)
            self.dropped += lines
            self.reason = exc.strerror or str(exc)
            return False
        return True

    def rotate(self) -> None:
        """<path> becomes <path>.1, each older one moves up one, the oldest past --log-retain goes."""
        retain = max(self.rotation.retain, 0)
        if self.compressor is not None:
            self.compressor.join()
            self.compressor = None
        for k in range(retain, 0, -1):
            for suffix in ("", ".gz"):
                old = f"{self.path}.{k}{suffix}"
                if os.path.exists(old):
                    if k == retain:
                        os.unlink(old)
                    else:
                        os.replace(old, f"{self.path}.{k + 1}{suffix}")
        try:
            if retain:
                os.replace(self.path, f"{self.path}.1")
            else:
                os.unlink(self.path)
        except FileNotFoundError:  # moved away already (an external logrotate without USR1)
            pass
        self.open()
        second = f"{self.path}.2"
        if self.rotation.compress and os.path.exists(second):
            self.compressor = threading.Thread(target=compress, args=(second,), daemon=True)
            self.compressor.start()

    def close(self) -> None:
        if self.compressor is not None:
            self.compressor.join()
            self.compressor = None
        if self.fd >= 0:  # (once: a refused worker's file is the app's file under a second name)
            os.close(self.fd)
            self.fd = -1


def compress(path: str) -> None:
    """path -> path.gz, atomically (a reader sees the plain file or the whole gzip, never half of one)."""
    with (open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as src,
          open(open_log(path + ".gz.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as raw,
          gzip.GzipFile(filename=os.path.basename(path), mode="wb", fileobj=raw) as dst):
        shutil.copyfileobj(src, dst)
    os.replace(path + ".gz.tmp", path + ".gz")
    os.unlink(path)


class Stream:
    """One pipe, read into whole lines for its file (or, --split, for its workers' files)."""

    def __init__(self, fd: int, out: LogFile, stamp: str, files: Files | None = None,
                 combined: LogFile | None = None) -> None:
        self.fd = fd
        self.out = out
        self.combined = combined  # PM2's -l: every line of both streams in a third file too
        self.stamp = stamp  # strftime format of a prefix (--time), or ''
        self.files = files  # --split: lines tagged with a worker go to that worker's file
        self.partial = b""

    def read(self) -> bool:
        """Write the whole lines that arrived; False at EOF (every writer closed the pipe)."""
        data = os.read(self.fd, READ_SIZE)
        if not data:
            if self.partial:
                self.dispatch(self.partial + b"\n")
                self.partial = b""
            return False
        buffered = self.partial + data
        cut = buffered.rfind(b"\n") + 1
        self.partial = buffered[cut:]
        if cut:
            self.dispatch(buffered[:cut])
        return True

    def dispatch(self, chunk: bytes) -> None:
        if self.files is None or TAG not in chunk:
            self.emit(self.out, chunk)
            return
        batches: dict[str, list[bytes]] = {}
        for line in chunk.splitlines(keepends=True):
            if line.startswith(TAG) and line.count(TAG) >= 2:
                _, slot, line = line.split(TAG, 2)
                path = worker_file(self.out.path, int(slot)) if slot.isdigit() else self.out.path
            else:
                path = self.out.path
            batches.setdefault(path, []).append(line)
        for path, lines in batches.items():
            try:
                out = self.files.get(path)
            except LogFileRefused as exc:  # a worker's own file: its lines go to the app's file instead
                print(f"prun: warning: {exc.strerror}; its lines go to {self.out.path}", file=sys.stderr, flush=True)
                out = self.files[path] = self.out
            self.emit(out, b"".join(lines))

    def emit(self, out: LogFile, chunk: bytes) -> None:
        if self.stamp:
            prefix = time.strftime(self.stamp).encode() + b" "
            chunk = b"".join(prefix + line if not line.startswith(b"{") else line
                             for line in chunk.splitlines(keepends=True))
        if self.combined is not None:
            self.combined.write(chunk)
        dropped = out.dropped
        if not dropped:
            out.write(chunk)
        elif out.write(f"prun: warning: {dropped} log lines were dropped ({out.reason})\n".encode() + chunk):
            out.dropped -= dropped  # space is back: the file says first what was lost
        else:
            out.dropped -= 1  # that note was not one of the app's lines


TAG = b"\x1e"  # cluster/log.py's WORKER_TAG


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

    def __init__(self, rotation: Rotation) -> None:
        super().__init__()
        self.rotation = rotation

    def get(self, path: str) -> LogFile:  # type: ignore[override]
        if path not in self:
            self[path] = LogFile(path, self.rotation)
        return self[path]


def serve(out_fd: int, err_fd: int, out_path: str, err_path: str, rotation: Rotation, stamp: str,
          split: bool = False, combined_path: str = "") -> None:
    """Copy the two pipes into their files until both reach EOF."""
    if os.path.exists(out_path) and not os.path.isfile(out_path):
        lock = -1  # /dev/null: no file to write in order, and no .lock beside it in /dev
    else:
        lock = open_log(out_path + ".lock", os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + LOCK_WAIT
    while lock >= 0:  # the writer of the master before this one finishes when its last process closed the pipes
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:  # something the old master started keeps them open: go on anyway
                print(f"prun: warning: {out_path}: the previous log writer is still running; writing too",
                      file=sys.stderr, flush=True)
                break
            time.sleep(0.02)
    files = Files(rotation)
    combined = files.get(combined_path) if combined_path else None
    streams = {fd: Stream(fd, files.get(path), stamp, files if split else None, combined)
               for fd, path in ((out_fd, out_path), (err_fd, err_path))}
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    reopen = [False]

    def on_usr1(signum: int, frame: object) -> None:
        reopen[0] = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead, counted as a full disk
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    for fd in streams:
        selector.register(fd, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while streams:
        for key, _ in selector.select():
            if key.fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                continue
            if not streams[key.fd].read():
                selector.unregister(key.fd)
                os.close(key.fd)
                del streams[key.fd]
        if reopen[0]:
            reopen[0] = False
            for each in files.values():
                each.open()
    for each in files.values():
        each.close()


class Follower:
    """Reads a log file on from an offset, across a rotation (the rest of <path>.1 first) or a truncation."""

    def __init__(self, path: str, offset: int | None = None, inode: int = 0) -> None:
        self.path = path
        self.inode = inode or _inode(path)
        self.offset = offset if offset is not None else _size(path)
        self.partial = b""

    def read(self, limit: int = 1 << 20) -> list[bytes]:
        """The whole lines written since the last read (at most about `limit` bytes at a time)."""
        data = b""
        inode = _inode(self.path)
        if inode != self.inode:
            if self.inode:  # rotated (maybe more than once): the rest of the file it was, then the newer ones
                data = self._rotated_since(limit)
            self.inode, self.offset = inode, 0
        elif _size(self.path) < self.offset:
            self.offset = 0  # truncated (prun flush)
        more = _read(self.path, self.offset, limit)
        self.offset += len(more)
        *lines, self.partial = (self.partial + data + more).split(b"\n")
        return lines


    def _rotated_since(self, limit: int) -> bytes:
        newer: list[str] = []
        k = 1
        while True:
            plain, packed = f"{self.path}.{k}", f"{self.path}.{k}.gz"
            if _inode(plain) == self.inode:
                chunks = [_read(plain, self.offset, limit)]
                for path in reversed(newer):
                    chunks.append(gzip.open(path).read() if path.endswith(".gz") else _read(path, 0, limit))
                return b"".join(chunks)
            if os.path.exists(plain):
                newer.append(plain)
            elif os.path.exists(packed):
                newer.append(packed)
            else:
                return b""  # gone (compressed or removed) before it could be read
            k += 1


def _read(path: str, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(limit)
    except OSError:
        return b""


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="prun-logs", description="Write an app's output into rotated files.")
    parser.add_argument("out_fd", type=int)
    parser.add_argument("err_fd", type=int)
    parser.add_argument("out_path")
    parser.add_argument("err_path")
    parser.add_argument("--name", default="")
    parser.add_argument("--max-size", type=int, default=Rotation.max_size)
    parser.add_argument("--retain", type=int, default=Rotation.retain)
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--daily", action="store_true")
    parser.add_argument("--time", default="", help="strftime format of a prefix to each line")
    parser.add_argument("--split", action="store_true", help="lines tagged with a worker go to its own file")
    parser.add_argument("--combined", default="", help="a third file with the lines of both")
    args = parser.parse_args()
    try:
        import setproctitle

        setproctitle.setproctitle(f"prun log-writer {args.name}")
    except ImportError:  # pragma: no cover
        pass
    try:
        serve(args.out_fd, args.err_fd, args.out_path, args.err_path,
              Rotation(args.max_size, args.retain, args.compress, args.daily), args.time, args.split,
              args.combined)
    except LogFileRefused as exc:
        print(f"prun: error: {exc.strerror}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
