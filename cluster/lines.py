"""Whole lines out of one source's bytes, however the source writes them.

A worker (or a fork-mode instance) may write a line in pieces (`print` under PYTHONUNBUFFERED with
write_through: the text, then the newline; `os.write` of a part), write 1 MB in one line, or exit without
a last newline. Each source has its own pipe and its own `Lines`: bytes are held until their newline, so
what comes out is whole lines in the source's order. A line longer than `limit` bytes is given out in
pieces of at most `limit` bytes as it arrives (never held whole, so memory stays bounded by `limit`); the
bytes left at EOF are a last line.

What `feed` gives is a list of `(data, part, more)`:

- `(block, -1, False)`: one or more whole lines, each ending in a newline, as they came;
- `(piece, k, more)`: piece k (0, 1, ...) of a line that was cut, without a newline; `more` until the last.

`text()` writes pieces as lines of their own, each after the first starting with a marker that names the
source (`prun: worker 1 continued: `), so that a reader can put the line together again.
"""

from __future__ import annotations

Item = tuple[bytes, int, bool]


class Lines:
    """One source's bytes, assembled into whole lines (pieces past `limit`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.partial = b""
        self.part = 0  # pieces already given out of the line in progress

    def feed(self, data: bytes) -> list[Item]:
        """What `data` completes: whole lines, and pieces of lines too long to hold."""
        buf = self.partial + data if self.partial else data
        cut = buf.rfind(b"\n") + 1
        out: list[Item] = []
        if cut:
            whole = buf[:cut]
            if not self.part and (cut <= self.limit or max(map(len, whole.split(b"\n"))) <= self.limit):
                out.append((whole, -1, False))  # the usual case: nothing to cut, no Python loop per line
            else:
                self._cut_lines(whole, out)
        rest = buf[cut:]
        while len(rest) > self.limit:
            size = boundary(rest, self.limit)
            out.append((rest[:size], self.part, True))
            self.part += 1
            rest = rest[size:]
        self.partial = rest
        return out

    def finish(self) -> list[Item]:
        """EOF: the bytes after the last newline are a last line."""
        if not self.partial and not self.part:
            return []
        out: list[Item] = [(self.partial, self.part, False)]
        self.partial, self.part = b"", 0
        return out

    def _cut_lines(self, whole: bytes, out: list[Item]) -> None:
        """Whole lines of which some are too long (or the first ends a line already cut)."""
        start = run = 0
        while start < len(whole):
            end = whole.index(b"\n", start)
            if end - start > self.limit or self.part:
                if run < start:
                    out.append((whole[run:start], -1, False))
                line, part = whole[start:end], self.part
                while len(line) > self.limit:
                    size = boundary(line, self.limit)
                    out.append((line[:size], part, True))
                    part += 1
                    line = line[size:]
                out.append((line, part, False))
                self.part = 0
                run = end + 1
            start = end + 1
        if run < len(whole):
            out.append((whole[run:], -1, False))


def boundary(data: bytes, size: int) -> int:
    """Where to cut `data` at most `size` bytes in: not inside a UTF-8 character, if one ends near."""
    cut = size
    while cut > size - 3 and cut > 1 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut if data[cut] & 0xC0 != 0x80 else size


def text(items: list[Item], marker: bytes) -> tuple[bytes, int]:
    """The items as text lines (pieces after the first behind `marker`), and how many lines that is."""
    if len(items) == 1 and items[0][1] < 0:
        block = items[0][0]
        return block, block.count(b"\n")
    chunks = []
    lines = 0
    for data, part, _more in items:
        if part < 0:
            chunks.append(data)
            lines += data.count(b"\n")
        else:
            chunks.append(marker + data + b"\n" if part else data + b"\n")
            lines += 1
    return b"".join(chunks), lines
