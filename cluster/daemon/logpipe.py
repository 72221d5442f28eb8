"""One of the log writer's two pipes as it reads them: what the pipe holds, seen without taking it out (tee(2)
into a scratch pipe), then taken out once written and noted (logwriter.py's exactly-once).

Where tee(2) cannot be used (not a pipe, no pipe pages left for a scratch pipe), it reads as other programs
do: bytes read and not yet written are then lost with a killed writer, and the frames missing are counted.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
from dataclasses import dataclass, field

SPLICE_F_NONBLOCK = 2
STALL_RETRY = 0.02  # a pipe holding only part of a frame is looked at again after this


class Peek:
    """tee(2): what a pipe holds, without taking it out."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.tee = libc.tee
        self.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
        self.tee.restype = ctypes.c_ssize_t

    def __call__(self, source: int, scratch: int, size: int) -> int:
        n = self.tee(source, scratch, size, SPLICE_F_NONBLOCK)
        if n < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(n)


@dataclass(eq=False)
class Pipe:
    """One of the two pipes: where the writer is in it (frames before `seq` written, and `lines` lines of it)."""

    fd: int
    kind: int  # OUT or ERR: what a line that is not in a frame is
    peek: Peek | None
    seq: int = 1
    lines: int = 0
    held: bytes = b""  # without tee: bytes taken out of the pipe and not yet written
    scratch: tuple[int, int] = (-1, -1)
    scratch_size: int = 0
    stalled_until: float = 0.0
    eof: bool = False
    lost: int = 0  # frames that never arrived (without tee, a killed writer's)
    devnull: int = -1  # where taken bytes go
    inode: int = field(init=False)

    def __post_init__(self) -> None:
        self.inode = os.fstat(self.fd).st_ino
        os.set_blocking(self.fd, False)
        if self.peek is not None:
            self.scratch = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def look(self) -> bytes | None:
        """What the pipe holds now (b'' if nothing yet); None at EOF (empty, and every writer gone)."""
        if self.peek is not None and not self.scratch_size:
            self.fit()
        if self.peek is not None:
            try:
                return self._tee()
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return b""
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EBADF):  # (EBADF: not a pipe)
                    raise
                self.peek = None  # no tee here: read, as other programs do
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return self.held
        if not data:
            return self.held or None
        self.held += data
        return self.held

    def _tee(self) -> bytes | None:
        assert self.peek is not None
        n = self.peek(self.fd, self.scratch[1], self.scratch_size)
        if n == 0:
            return None
        chunks = []
        while n > 0:
            chunk = os.read(self.scratch[0], n)
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def fit(self) -> None:
        """The scratch pipe as big as the pipe looked into: tee(2) copies the pipe's buffers, as many as the
        scratch pipe has room for, so a frame spread over more buffers than that could never be seen whole
        (the master grows its pipes after the writer started)."""
        if self.peek is None:
            return
        try:
            size = fcntl.fcntl(self.fd, fcntl.F_GETPIPE_SZ)
            if size > self.scratch_size:
                self.scratch_size = fcntl.fcntl(self.scratch[1], fcntl.F_SETPIPE_SZ, size)
        except OSError:  # not a pipe, or this user's pipe pages are used up: read as other programs do
            self.peek = None

    def take(self, count: int) -> None:
        """Take out of the pipe the `count` bytes written to the files."""
        if self.peek is None:
            self.held = self.held[count:]
            return
        while count > 0:
            try:
                if self.devnull < 0:
                    self.devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                count -= os.splice(self.fd, self.devnull, count)  # not even copied
            except OSError:
                count -= len(os.read(self.fd, count))

    def hung_up(self) -> bool:
        """Every writer of the pipe is gone (what it holds will never be completed)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return any(event & select.POLLHUP for _, event in poller.poll(0))

    def close(self) -> None:
        for fd in (self.fd, *self.scratch, self.devnull):
            if fd >= 0:
                os.close(fd)
