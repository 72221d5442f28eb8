"""What a master (or a fork-mode supervisor) writes to the daemon's log writer: frames of whole lines, by source.

    b"\\x1ep" | kind (1 byte) | source (u16) | seq (u64) | length (u32) | payload (`length` bytes)

- kind: `o` stdout lines, `e` stderr lines, `a` access log lines, `A` the access log file's path.
- source: 0 for the master's own lines, N + 1 for its worker (or fork-mode instance) N: the writer files
  them by worker with --no-merge-logs.
- seq: per pipe, 1, 2, ...: the writer's journal says up to which frame (and line of it) its files hold, so a
  writer that takes over from a killed one writes each line exactly once (cluster/daemon/logwriter.py).
- payload: whole lines only, each ending in a newline; at most half the pipe's capacity, so that a whole
  frame always fits in the pipe for the writer to see before it takes it.

Anything else the writer finds where a frame should start (a line the master wrote before it framed its
output, a C library's message on fd 2) is a plain line of the master's, up to its newline.
"""

from __future__ import annotations

import fcntl
import struct

MAGIC = b"\x1ep"
HEADER = struct.Struct("<2sBHQI")
OUT, ERR, ACCESS, ACCESS_PATH = (ord(c) for c in "oeaA")
KINDS = frozenset((OUT, ERR, ACCESS, ACCESS_PATH))
PAYLOAD_MAX = 16 << 20  # a header claiming more is not a header: the bytes are read as a plain line
PIPE_SIZE = 1 << 20  # what a framing master asks of its pipes (Linux's default pipe-max-size for non-root)


def header(kind: int, source: int, seq: int, length: int) -> bytes:
    return HEADER.pack(MAGIC, kind, source, seq, length)


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Ask for a bigger pipe buffer (fewer, larger frames fit); its capacity, as it is after asking."""
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:  # above pipe-max-size, or this user's pipe pages are used up: keep what it has
        try:
            return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        except OSError:
            return 65536


Item = tuple[int, int, int, bytes, int]  # (kind, source, seq, payload, where in the data it ends)


def parse(data: bytes, plain_kind: int, raw_max: int, final: bool = False) -> tuple[list[Item], int]:
    """The whole frames (and plain lines) at the start of `data`, and how many bytes they take.

    A frame cut short is left for later, unless `final` (its writer is gone): then what came of it is
    written as it is. A plain line is read up to its newline, at most `raw_max` bytes at a time."""
    items: list[Item] = []
    pos = 0
    size = len(data)
    hsize = HEADER.size
    while pos < size:
        if data.startswith(MAGIC, pos):
            if size - pos < hsize:
                if not final:
                    break
            else:
                _, kind, source, seq, length = HEADER.unpack_from(data, pos)
                if kind in KINDS and length <= PAYLOAD_MAX:
                    end = pos + hsize + length
                    if end > size:
                        if not final:
                            break
                        end = size
                    items.append((kind, source, seq, data[pos + hsize:end], end))
                    pos = end
                    continue
        end = data.find(b"\n", pos, pos + raw_max) + 1  # not a frame: a plain line of the master's
        if not end:
            if size - pos < raw_max and not final:
                break
            end = min(size, pos + raw_max)
        items.append((plain_kind, 0, -1, data[pos:end], end))
        pos = end
    return items, pos
