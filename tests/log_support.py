"""Reading an app's log files back in tests, and checking the lines tests/apps/scribe.py wrote."""

from __future__ import annotations

import gzip
import os
import re
import time
import zlib
from dataclasses import dataclass, field

SCRIBED = re.compile(rb"(scribe (\d+) (\d+) .*) ([0-9a-f]{8})", re.S)
DONE = re.compile(rb"scribe (\d+) done (\d+)")
CONTINUED = re.compile(rb"prun: (?:worker|instance|master|supervisor) (?:\d+ )?continued: ")


def rotated_files(path: str) -> list[str]:
    """The rotated files of a log file, oldest first (plain or gzipped), then the file itself."""
    directory, base = os.path.split(path)
    found = [f for f in os.listdir(directory) if re.fullmatch(re.escape(base) + r"\.\d+(\.gz)?", f)]
    found.sort(key=lambda f: -int(f.split(".")[-2 if f.endswith(".gz") else -1]))
    return [os.path.join(directory, f) for f in found] + [path]


def all_lines(path: str, timeout: float = 60.0) -> list[bytes]:
    """Every line of a log file and of its rotated files, oldest first (a last line without a newline too)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _all_lines(path)
        except (FileNotFoundError, EOFError):  # rotated or compressed while read: read again
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _all_lines(path: str) -> list[bytes]:
    lines: list[bytes] = []
    for name in rotated_files(path):
        data = gzip.open(name).read() if name.endswith(".gz") else open(name, "rb").read()
        if name != path:
            assert data.endswith(b"\n"), f"{name} ends inside a line"
        lines += data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
    return lines


def rejoin(lines: list[bytes]) -> list[bytes]:
    """Lines cut for --log-max-line put together again (the pieces of one source follow each other)."""
    joined: list[bytes] = []
    for line in lines:
        marker = CONTINUED.match(line)
        if marker and joined:
            joined[-1] += line[marker.end():]
        else:
            joined.append(line)
    return joined


@dataclass
class Scribed:
    """What scribe wrote, as found: each process's line numbers in the order found, its done lines, and the
    lines that are not whole (a CRC that does not match, two lines run together, half of one)."""

    numbers: dict[int, list[int]] = field(default_factory=dict)
    done: dict[int, int] = field(default_factory=dict)
    broken: list[bytes] = field(default_factory=list)
    others: list[bytes] = field(default_factory=list)

    def assert_whole(self, processes: int, count: int) -> None:
        """Every line of `processes` processes, `count` each: found exactly once, whole, in order."""
        assert self.broken == [], [line[:120] for line in self.broken[:5]]
        assert len(self.done) == processes, self.done
        assert set(self.numbers) == set(self.done)
        for pid, numbers in self.numbers.items():
            assert self.done[pid] == count
            assert numbers == list(range(count)), f"pid {pid}: {missing_or_repeated(numbers, count)}"


def scribed(lines: list[bytes]) -> Scribed:
    found = Scribed()
    for line in lines:
        if not line.startswith(b"scribe "):
            found.others.append(line)
            continue
        done = DONE.fullmatch(line)
        if done:
            found.done[int(done.group(1))] = int(done.group(2))
            continue
        match = SCRIBED.fullmatch(line)
        if not match or int(match.group(4), 16) != zlib.crc32(match.group(1)):
            found.broken.append(line)
            continue
        found.numbers.setdefault(int(match.group(2)), []).append(int(match.group(3)))
    return found


def missing_or_repeated(numbers: list[int], count: int) -> str:
    seen = set(numbers)
    missing = [n for n in range(count) if n not in seen]
    repeated = len(numbers) - len(seen)
    return f"{len(missing)} missing (first {missing[:5]}), {repeated} repeated, in order: {numbers == sorted(numbers)}"
