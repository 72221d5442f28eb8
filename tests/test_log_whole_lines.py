"""Under the daemon every line an app writes reaches its log file whole and exactly once, in its writer's order,
however the app writes it: print unbuffered with write_through (the text, then the newline), os.write of a
line in pieces, lines over PIPE_BUF, past --log-max-line, bytes that are not UTF-8, no newline before exit;
through rotations (compressed), a log writer SIGKILLed and replaced meanwhile, and `prun logs -f`.

tests/apps/scribe.py writes the lines, each with a CRC of its own; tests/log_support.py checks them."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from prun.cluster.client import Client
from tests.daemon_support import Home, HttpLoad
from tests.log_support import all_lines, rejoin, scribed
from tests.support import APPS, prun_command, wait_until

SCRIBE = ("scribe:app", "--lifespan", "off", "-b", "127.0.0.1:0")


def writer_pid(home: Home, name: str) -> int | None:
    pid: int | None = Client(home.path, autostart=False).describe(name)[0]["log_writer_pid"]
    return pid


def done_lines(path: str) -> int:
    return sum(line.startswith(b"scribe ") and b" done " in line for line in all_lines(path))


def test_two_workers_writing_every_way_through_rotations_and_killed_writers(home: Home, tmp_path: Path) -> None:
    count = 3000  # per worker: print unbuffered, os.write in pieces, 5-20 KiB lines, bytes that are not UTF-8
    go = tmp_path / "go"  # the workers write their last line once it exists
    home.prun("start", *SCRIBE, "-i", "2", "--name", "scribe", "--log-max-size", "64K", "--log-retain", "100000",
              "--log-compress", env={"SCRIBE_LINES": str(count), "SCRIBE_WAYS": "print,pieces,big,junk,print,pieces",
                                     "SCRIBE_PACE": "0.05", "SCRIBE_HOLD": str(go)})
    out = os.path.join(home.path, "logs", "scribe-out.log")
    err = Path(home.path, "logs", "scribe-err.log")
    killed: list[int] = []

    def took_over(pid: int) -> bool:
        return f"the log writer (pid {pid}) died killed by SIGKILL" in err.read_text()

    with HttpLoad(home.port("scribe"), clients=2) as load:
        while len(killed) < 3:  # the writer SIGKILLed (and replaced) three times while the workers write
            pid = wait_until(lambda: (lambda p: p not in killed and p)(writer_pid(home, "scribe")),
                             what="a (new) log writer")
            if killed:
                wait_until(lambda: took_over(killed[-1]), what="the new writer to take over")
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]  # no request failed for it
    go.touch()
    wait_until(lambda: done_lines(out) == 2, timeout=120, what="both workers' last line")
    found = scribed(all_lines(out))
    found.assert_whole(processes=2, count=count)
    assert found.others == []
    rotations = [f for f in os.listdir(os.path.dirname(out)) if re.fullmatch(r"scribe-out\.log\.\d+(\.gz)?", f)]
    assert len(rotations) >= 100 and any(f.endswith(".gz") for f in rotations)
    said = err.read_text()
    for pid in killed:
        assert re.search(rf"prun: the log writer \(pid {pid}\) died killed by SIGKILL; pid \d+ took over its "
                         r"pipes: no line was lost", said), said[-2000:]


def test_lines_past_the_bound_are_cut_into_marked_pieces_that_rejoin_whole(home: Home) -> None:
    count = 12  # half of them 100 KiB to 1 MiB, in one os.write each
    home.prun("start", *SCRIBE, "-i", "2", "--name", "big", "--no-merge-logs", "--log-max-size", "1M",
              "--log-retain", "1000", env={"SCRIBE_LINES": str(count), "SCRIBE_WAYS": "huge,print"})
    files = [os.path.join(home.path, "logs", f"big-out-{slot}.log") for slot in (0, 1)]
    wait_until(lambda: all(os.path.exists(f) and done_lines(f) == 1 for f in files), timeout=60,
               what="each worker's last line")
    for slot, path in enumerate(files):
        lines = all_lines(path)
        assert max(len(line) for line in lines) <= 64 * 1024 + len(f"prun: worker {slot} continued: ")
        pieces = [line for line in lines if line.startswith(f"prun: worker {slot} continued: ".encode())]
        assert len(pieces) >= count // 2  # each huge line is more than one piece
        scribed(rejoin(lines)).assert_whole(processes=1, count=count)


def test_fork_mode_instances_lines_are_whole_even_the_last_one_without_a_newline(home: Home, tmp_path: Path) -> None:
    count = 2000
    home.prun("start", "scribe.py", "-i", "2", "--name", "forked", "--log-max-size", "32K", "--log-retain", "1000",
              "--env", f"SCRIBE_LINES={count}", "--env", "SCRIBE_WAYS=print,pieces,junk,big",
              "--env", "SCRIBE_STREAM=stderr", "--env", "SCRIBE_NO_NEWLINE=1", "--env", f"SCRIBE_ONCE={tmp_path}")
    err = os.path.join(home.path, "logs", "forked-err.log")
    wait_until(lambda: done_lines(err) == 2, timeout=60, what="both instances' last line (no newline at their exit)")
    found = scribed(all_lines(err))
    found.assert_whole(processes=2, count=count)
    assert all(line.startswith(b"prun: ") for line in found.others), found.others[:5]  # the supervisor's own


def test_logs_follow_loses_nothing_across_several_rotations_a_poll_compressed(home: Home) -> None:
    """16K files, compressed: the writer rotates many times between two reads of `prun logs -f` (every 0.1 s)."""
    home.prun("start", *SCRIBE, "--name", "followed", "--log-max-size", "16K", "--log-compress", "--log-retain",
              "1000", env={"SCRIBE_LINES": "0"})
    follower = subprocess.Popen([*prun_command(), "logs", "followed", "--json", "--lines", "0"],
                                stdout=subprocess.PIPE, text=True, env=home.env, cwd=str(APPS))
    try:
        assert follower.stdout is not None
        records: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=lambda: [records.put(json.loads(line)) for line in follower.stdout],
                         daemon=True).start()
        began = time.time()
        home.prun("restart", "followed", "--env", "SCRIBE_LINES=3000", "--env", "SCRIBE_WAYS=print,pieces")
        lines: list[bytes] = []
        times: list[float] = []
        while not any(b" done " in line for line in lines):
            record = records.get(timeout=60)
            message = str(record["message"])
            if message.startswith("scribe "):
                lines.append(message.encode("latin-1"))
                assert isinstance(record["time"], float)
                times.append(record["time"])
        scribed(lines).assert_whole(processes=1, count=3000)
        assert began - 1 <= times[0] <= times[-1] <= time.time()  # when the writer had them, not when read
        out = os.path.join(home.path, "logs", "followed-out.log")
        assert len([f for f in os.listdir(os.path.dirname(out)) if f.startswith("followed-out.log.")]) >= 10
    finally:
        follower.terminate()
        follower.wait()


def test_foreground_log_file_gets_every_line_whole(prun, tmp_path: Path) -> None:
    """`prun app --log-file FILE` in the foreground: the master relays its workers' lines, so lines written in
    pieces, unbuffered or over PIPE_BUF by two workers at once reach the file whole."""
    log = tmp_path / "app.log"
    count = 6000
    env = {"SCRIBE_LINES": str(count), "SCRIBE_WAYS": "print,pieces,print,pieces,big,junk"}
    prun(*SCRIBE, "-i", "2", "--log-file", str(log), cwd=APPS, env=env)
    wait_until(lambda: log.exists() and done_lines(str(log)) == 2, timeout=60, what="both workers' last line")
    found = scribed(all_lines(str(log)))
    found.assert_whole(processes=2, count=count)
