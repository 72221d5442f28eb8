"""The log writer (cluster/daemon/logwriter.py) as the daemon runs it, on two pipes this test writes frames into:
each line once and whole through rotations and compressions, whatever moment it is SIGKILLed at and replaced
on the same pipes (as runner.py does); plain lines beside frames; a frame cut short by its writer's exit;
--time and --split; and the frames' parser (cluster/logframe.py)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prun.cluster.logframe import ACCESS, ACCESS_PATH, ERR, OUT, header, parse
from tests.log_support import all_lines
from tests.support import wait_until


class Pipes:
    """The two pipes of an app's log writer; the test holds their read ends as the daemon does."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.out, self.err = str(directory / "app-out.log"), str(directory / "app-err.log")
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.options = options
        self.seq = {self.out_w: 0, self.err_w: 0}
        self.writer = self.start()

    def start(self, replacing: subprocess.Popen[bytes] | None = None) -> subprocess.Popen[bytes]:
        how = ["--replacing", str(replacing.pid), "--how", "killed by SIGKILL"] if replacing else []
        return subprocess.Popen([sys.executable, "-m", "prun.cluster.daemon.logwriter", str(self.out_r),
                                 str(self.err_r), self.out, self.err, *self.options, *how],
                                pass_fds=(self.out_r, self.err_r), stdin=subprocess.DEVNULL)

    def frame(self, kind: int, source: int, payload: bytes, fd: int | None = None) -> bytes:
        fd = fd if fd is not None else (self.err_w if kind == ERR else self.out_w)
        self.seq[fd] += 1
        return header(kind, source, self.seq[fd], len(payload)) + payload

    def send(self, data: bytes, fd: int | None = None) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd if fd is not None else self.out_w, view):]

    def close_writing(self) -> int:
        """The master is gone: EOF on both pipes; the writer's exit code once it wrote the rest."""
        for fd in (self.out_w, self.err_w):
            os.close(fd)
        self.out_w = self.err_w = -1
        return self.writer.wait(60)

    def journal_names(self, pid: int) -> bool:
        try:
            return f'"writer":{pid},' in Path(self.out + ".lock").read_text(errors="replace")
        except FileNotFoundError:
            return False

    def cleanup(self) -> None:
        if self.writer.poll() is None:
            self.writer.kill()
            self.writer.wait()
        for fd in (self.out_r, self.err_r, self.out_w, self.err_w):
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def pipes(tmp_path: Path) -> Iterator[type[Pipes]]:
    started: list[Pipes] = []

    def start(*options: str) -> Pipes:
        instance = Pipes(tmp_path, *options)
        started.append(instance)
        return instance

    yield start  # type: ignore[misc]
    for instance in started:
        instance.cleanup()


def numbered(n: int, rng: random.Random) -> bytes:
    body = b"line %d %s" % (n, b"x" * rng.randint(10, 300))
    return body + b" %08x\n" % zlib.crc32(body)


def check_numbered(lines: list[bytes], count: int) -> None:
    numbers = []
    for line in lines:
        match = re.fullmatch(rb"(line (\d+) x+) ([0-9a-f]{8})", line)
        assert match and int(match.group(3), 16) == zlib.crc32(match.group(1)), line[:100]
        numbers.append(int(match.group(2)))
    assert numbers == list(range(count)), f"{len(numbers)} lines, {len(set(numbers))} different"


def kill_writers_while(feed: Callable[[], None], logs: Pipes, rng: random.Random, most: int) -> list[int]:
    """Run `feed` in a thread while the writer is SIGKILLed (at most `most` times, each once it noted its files,
    at a random moment) and replaced on the same pipes, as runner.py does; the pids killed."""
    feeder = threading.Thread(target=feed)
    feeder.start()
    killed: list[int] = []
    try:
        while feeder.is_alive() and len(killed) < most:
            wait_until(lambda: logs.journal_names(logs.writer.pid), what="the writer to note its files")
            time.sleep(rng.uniform(0, 0.05))
            logs.writer.kill()
            logs.writer.wait()
            killed.append(logs.writer.pid)
            logs.writer = logs.start(replacing=logs.writer)
    finally:
        feeder.join(120)
    return killed


def test_each_line_once_and_whole_whatever_moment_the_writer_is_killed_at(pipes: type[Pipes]) -> None:
    """SIGKILLed 25 times at random moments while frames come: while it writes, rotates, compresses, notes."""
    logs = pipes("--max-size", "16384", "--retain", "100000", "--compress")
    count = 40000
    rng = random.Random(7)

    def feed() -> None:
        n = 0
        while n < count:
            batch = [numbered(m, rng) for m in range(n, min(count, n + rng.randint(1, 60)))]
            n += len(batch)
            logs.send(logs.frame(OUT, rng.randint(0, 3), b"".join(batch)))

    killed = kill_writers_while(feed, logs, rng, 25)
    assert len(killed) >= 10
    assert logs.close_writing() == 0
    check_numbered(all_lines(logs.out), count)
    notes = Path(logs.err).read_text().splitlines()
    assert [int(re.match(r"prun: the log writer \(pid (\d+)\)", note).group(1)) for note in notes] == killed
    assert all(note.endswith("no line was lost") or "were written again" in note for note in notes), notes
    assert sum(f.endswith(".gz") for f in os.listdir(os.path.dirname(logs.out))) >= 50


def test_the_combined_file_holds_every_line_once_across_killed_writers(pipes: type[Pipes], tmp_path: Path) -> None:
    """PM2's -l: out and err lines in a third file too, each once, while writers are SIGKILLed and files rotate."""
    combined = str(tmp_path / "app-all.log")
    logs = pipes("--max-size", "16384", "--retain", "100000", "--combined", combined)
    count = 12000
    rng = random.Random(11)

    def feed() -> None:
        n = 0
        while n < count:
            batch = [numbered(m, rng) for m in range(n, min(count, n + rng.randint(1, 40)))]
            n += len(batch)
            kind = rng.choice((OUT, ERR))
            logs.send(logs.frame(kind, 1, b"".join(batch)), logs.err_w if kind == ERR else logs.out_w)

    kill_writers_while(feed, logs, rng, 8)
    assert logs.close_writing() == 0
    check_numbered(sorted(all_lines(combined), key=lambda line: int(line.split()[1])), count)
    written = [line for path in (logs.out, logs.err) for line in all_lines(path) if line.startswith(b"line ")]
    assert sorted(written) == sorted(all_lines(combined))


def test_dev_null_takes_the_lines_and_nothing_is_made_beside_it(pipes: type[Pipes], tmp_path: Path) -> None:
    logs = pipes()
    logs.out = "/dev/null"
    logs.writer.kill()
    logs.writer.wait()
    logs.writer = logs.start()
    logs.send(logs.frame(OUT, 1, b"to nowhere\n"))
    logs.send(logs.frame(ERR, 1, b"kept\n"), logs.err_w)
    wait_until(lambda: os.path.exists(logs.err) and b"kept" in Path(logs.err).read_bytes(), what="the err line")
    assert logs.close_writing() == 0
    assert Path(logs.err).read_bytes() == b"kept\n"
    assert os.path.exists(logs.err + ".lock")  # the journal sits beside the file that is one
    assert not [name for name in os.listdir("/dev") if name.startswith("null.")]


def test_plain_lines_beside_frames_and_a_frame_cut_short_by_the_masters_exit(pipes: type[Pipes]) -> None:
    logs = pipes()
    logs.send(b"prun: a line the master wrote before it framed\n")
    logs.send(logs.frame(OUT, 1, b"one\ntwo\n") + b"a plain line\n" + logs.frame(OUT, 2, b"three\n"))
    logs.send(logs.frame(ERR, 0, b"an error\n"), logs.err_w)
    cut = logs.frame(OUT, 1, b"four\nfive and the rest that never came\n")
    logs.send(cut[:-20])  # the master died in the middle of writing it
    assert logs.close_writing() == 0
    assert Path(logs.out).read_bytes() == (b"prun: a line the master wrote before it framed\none\ntwo\na plain line\n"
                                           b"three\nfour\nfive and the r\n")  # ended: nobody will finish it
    assert Path(logs.err).read_bytes() == b"an error\n"


def test_time_prefixes_split_files_and_the_access_log(pipes: type[Pipes], tmp_path: Path) -> None:
    logs = pipes("--time", "[%Y]", "--split")
    access = tmp_path / "access.log"
    logs.send(logs.frame(ACCESS_PATH, 0, str(access).encode()))
    logs.send(logs.frame(OUT, 0, b"master\n") + logs.frame(OUT, 1, b"worker 0\n") + logs.frame(OUT, 3, b"worker 2\n"))
    logs.send(logs.frame(OUT, 1, b"half of a line ") + logs.frame(OUT, 1, b"and its end\n{\"json\": 1}\n"))
    logs.send(logs.frame(ACCESS, 2, b"GET / 200\n"))
    assert logs.close_writing() == 0
    year = time.strftime("%Y")
    assert Path(logs.out).read_text() == f"[{year}] master\n"
    assert (tmp_path / "app-out-0.log").read_text() == (f"[{year}] worker 0\n[{year}] half of a line and its end\n"
                                                        '{"json": 1}\n')
    assert (tmp_path / "app-out-2.log").read_text() == f"[{year}] worker 2\n"
    assert access.read_text() == f"[{year}] GET / 200\n"


def test_parse_takes_whole_frames_and_plain_lines_and_leaves_the_rest() -> None:
    frame = header(OUT, 2, 7, 6) + b"hello\n"
    items, used = parse(frame + b"plain\n" + frame[:10], ERR, 100)
    assert items == [(OUT, 2, 7, b"hello\n", len(frame)), (ERR, 0, -1, b"plain\n", len(frame) + 6)]
    assert used == len(frame) + 6
    assert parse(b"no newline yet", OUT, 100) == ([], 0)
    assert parse(b"x" * 150, OUT, 100)[0][0][3] == b"x" * 100  # a plain line is taken 100 bytes at a time
    items, used = parse(frame[:10], OUT, 100, final=True)
    assert used == 10 and items[0][3] == frame[:10]  # a header cut short: what came, as a plain line
    bogus = header(OUT, 1, 1, 1 << 30) + b"x\n"  # no such payload: not a frame
    assert parse(bogus, OUT, 100)[0][0][2] == -1


def test_a_writer_that_cannot_use_tee_still_writes_every_line(tmp_path: Path) -> None:
    """Where tee(2) cannot be used (here: a socket, not a pipe), the writer reads as other programs do."""
    import socket

    ours, theirs = socket.socketpair()
    err_r, err_w = os.pipe()
    out = tmp_path / "sock-out.log"
    proc = subprocess.Popen([sys.executable, "-m", "prun.cluster.daemon.logwriter", str(theirs.fileno()),
                             str(err_r), str(out), str(tmp_path / "sock-err.log")], pass_fds=(theirs.fileno(), err_r))
    theirs.close()
    os.close(err_r)
    try:
        ours.sendall(header(OUT, 1, 1, 6) + b"first\n" + header(OUT, 1, 2, 7) + b"second\n")
    finally:
        ours.close()
        os.close(err_w)
    try:
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_bytes() == b"first\nsecond\n"


def test_a_signal_to_the_writer_reopens_its_files(pipes: type[Pipes]) -> None:
    logs = pipes()
    logs.send(logs.frame(OUT, 0, b"before\n"))
    wait_until(lambda: os.path.exists(logs.out) and Path(logs.out).read_bytes() == b"before\n", what="the line")
    os.rename(logs.out, logs.out + ".moved")
    logs.writer.send_signal(signal.SIGUSR1)
    wait_until(lambda: os.path.exists(logs.out), what="the file opened again")
    logs.send(logs.frame(OUT, 0, b"after\n"))
    assert logs.close_writing() == 0
    assert Path(logs.out).read_bytes() == b"after\n"
