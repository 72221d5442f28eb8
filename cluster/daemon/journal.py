"""The log writer's journal, in OUT_PATH's `.lock` file (whose flock keeps two writers of one app apart):
up to which frame, and line of it, each pipe's lines are in the files, and how long each file was then.

A writer notes it before it takes bytes out of its pipes (logwriter.py); one that starts on the pipes its
journal names cuts each file back to its noted length (what a killed writer wrote after its last note is
in the pipes still) and goes on from there.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import zlib
from typing import Any

from prun.cluster.logopen import open_log

LOCK_WAIT = 5.0  # seconds a new writer waits for the last one to finish


class Journal:
    """Up to where the files hold the pipes' frames, and how long each file is: the `.lock` file's text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0

    def load(self) -> dict[str, Any] | None:
        try:
            line = os.pread(self.fd, 1 << 20, 0).split(b"\n", 1)[0]
            crc, _, body = line.partition(b" ")
            if int(crc, 16) != zlib.crc32(body):
                return None
            state = json.loads(body)
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def save(self, state: dict[str, Any] | bytes) -> None:
        body = state if isinstance(state, bytes) else json.dumps(state, separators=(",", ":")).encode()
        line = b"%08x %s\n" % (zlib.crc32(body), body)
        os.pwrite(self.fd, line.ljust(self.written), 0)  # one write; a torn one fails its CRC
        self.written = max(self.written, len(line))


def lock(out_path: str) -> tuple[int, bool]:
    """The `.lock` file, and whether this writer holds it (the writer of the master before waits on it)."""
    fd = open_log(out_path + ".lock", os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + LOCK_WAIT
    while True:  # the writer of the master before this one finishes when its last process closed the pipes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd, True
        except BlockingIOError:
            if time.monotonic() > deadline:  # something the old master started keeps them open: go on anyway
                print(f"prun: warning: {out_path}: the previous log writer is still running; writing too",
                      file=sys.stderr, flush=True)
                return fd, False
            time.sleep(0.02)


def cut_back(path: str, noted: dict[int, int], count: bool) -> int:
    """Cut a file back to the length the journal noted (what a killed writer wrote after its last note);
    the lines cut, when `count`."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    size = noted.get(st.st_ino)
    if size is None or st.st_size <= size:
        return 0
    fd = open_log(path, os.O_RDWR)
    try:
        lines = os.pread(fd, st.st_size - size, size).count(b"\n") if count else 0
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return lines
