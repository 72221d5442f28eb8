"""Log files under the daemon: rotation without a lost, repeated or split line; reopen; flush; a full disk."""

from __future__ import annotations

import gzip
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from tests.daemon_support import Home, get
from tests.support import APPS, wait_until

CHATTY = ("chatty:app", "--lifespan", "off", "-b", "127.0.0.1:0")


def all_lines(path: str) -> list[str]:
    """Every line of a log file and its rotated files (plain or gzipped), oldest file first."""
    for _ in range(5):
        try:
            return _all_lines(path)
        except FileNotFoundError:  # rotated or compressed while read: read again
            continue
    return _all_lines(path)


def _all_lines(path: str) -> list[str]:
    lines: list[str] = []
    directory, base = os.path.split(path)
    rotated = [f for f in os.listdir(directory) if re.fullmatch(re.escape(base) + r"\.\d+(\.gz)?", f)]
    for name in sorted(rotated, key=lambda f: -int(f.split(".")[-2 if f.endswith(".gz") else -1])):
        full = os.path.join(directory, name)
        data = gzip.open(full).read() if name.endswith(".gz") else open(full, "rb").read()
        assert data.endswith(b"\n"), f"{name} ends within a line"
        lines += data.decode().splitlines()
    lines += open(path).read().splitlines()
    return lines


def test_two_workers_writing_through_20_rotations_lose_repeat_and_split_no_line(home: Home) -> None:
    count = 6000  # per worker, 100 bytes each: 1.2 MB through 64K files, about 18 rotations per worker's share
    home.prun("start", *CHATTY, "-i", "2", "--name", "chatty", "--log-max-size", "32K", "--log-retain", "200",
              "--log-compress", env={"CHATTY_LINES": str(count)})
    out = os.path.join(home.path, "logs", "chatty-out.log")
    wait_until(lambda: sum(line.endswith(" done") for line in all_lines(out)) == 2, timeout=60,
               what="both workers' last line")
    lines = all_lines(out)
    rotations = len([f for f in os.listdir(os.path.dirname(out)) if re.fullmatch(r"chatty-out\.log\.\d+(\.gz)?", f)])
    assert rotations >= 20, rotations
    assert any(f.endswith(".gz") for f in os.listdir(os.path.dirname(out)))
    chatty = [line for line in lines if line.startswith("chatty ")]
    seen = Counter(tuple(line.split(" ")[1:3]) for line in chatty)
    pids = {pid for pid, _ in seen}
    assert len(pids) == 2
    for pid in pids:
        numbers = sorted(int(n) for p, n in seen if p == pid and n != "done")
        assert numbers == list(range(count)), f"worker {pid}: lines lost"
    assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1][:5]  # none repeated
    pad = "x" * 80
    broken = [line for line in chatty if not line.endswith(" done") and not line.endswith(" " + pad)]
    assert broken == []  # none split or merged


def test_log_file_error_file_time_usr1_reopen_flush_and_json(home: Home) -> None:
    out, err = os.path.join(home.root, "app.out"), os.path.join(home.root, "app.err")
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api",
              "--log-file", out, "--error-file", err, "--time", "--log-date-format", "[%Y]")
    assert home.app("api")["status"] == "online"  # the daemon read the ready line from the chosen err file
    port = home.port("api")
    get(port, "/say?one")
    year = time.strftime("%Y")
    wait_until(lambda: f"[{year}] said one" in open(out).read(), what="the request's line, with its time")
    assert "greeter says hello on stderr" in open(err).read() and "prun: ready: " in open(err).read()
    assert "said one" not in open(err).read()

    os.rename(out, out + ".moved")  # an external logrotate
    home.prun("reloadLogs")
    wait_until(lambda: os.path.exists(out), what="the out file reopened")
    get(port, "/say?two")
    wait_until(lambda: "said two" in open(out).read(), what="a line in the reopened file")
    assert "said two" not in open(out + ".moved").read()
    os.rename(out, out + ".moved2")
    os.kill(home.app("api")["pid"], signal.SIGUSR1)  # the master's USR1 reaches its log writer
    wait_until(lambda: os.path.exists(out), what="the out file reopened on the master's USR1")

    home.prun("flush", "api")
    assert os.path.getsize(out) == 0 and os.path.getsize(err) == 0
    get(port, "/say?three")
    wait_until(lambda: "said three" in open(out).read(), what="a line after the flush")
    assert open(out).read().startswith(f"[{year}] said three")  # written at the file's new start

    shown = home.prun("logs", "api", "--json", "--nostream", "--lines", "5").stdout.splitlines()
    records = [json.loads(line) for line in shown]
    assert any(r["app"] == "api" and r["stream"] == "out" and r["message"].endswith("said three") for r in records)


def test_logs_follow_across_rotations(home: Home) -> None:
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api",
              "--log-max-size", "1K")
    port = home.port("api")
    follower = subprocess.Popen([*home_prun(home), "logs", "api", "--lines", "0"], stdout=subprocess.PIPE,
                                text=True, env=home.env, cwd=str(APPS))
    try:
        assert follower.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()

        def pinged() -> bool:
            get(port, "/say?ping")
            try:
                return "said ping" in lines.get(timeout=0.2)
            except queue.Empty:
                return False

        wait_until(pinged, what="prun logs following")
        for n in range(60):  # 60 lines of 60 bytes through 1K files: 3 rotations under the follower
            get(port, f"/say?{'x' * 48}{n}")
        out = os.path.join(home.path, "logs", "api-out.log")
        said: list[int] = []
        while len(said) < 60:
            line = lines.get(timeout=15)
            if "said " in line and "ping" not in line:
                said.append(int(line.rsplit("x", 1)[1]))
        assert said == list(range(60))
        assert os.path.exists(out + ".3")
    finally:
        follower.terminate()
        follower.wait()


def home_prun(home: Home) -> list[str]:
    from tests.support import prun_command

    return prun_command()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_drops_lines_counts_them_and_never_stops_serving(home: Home) -> None:
    disk = os.path.join(home.root, "disk")
    os.mkdir(disk)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", disk]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = os.path.join(disk, "api.out")
        home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api",
                  "--log-file", out, "--error-file", os.path.join(home.root, "api.err"), "--log-max-size", "0")
        port = home.port("api")
        filler = os.path.join(disk, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        log = os.path.join(home.path, "daemon.log")
        sent = 0
        while "dropping log lines" not in open(log).read():  # the file's last page fills up, then the disk refuses
            assert get(port, f"/say?full{sent}").startswith("hello")  # serving goes on
            sent += 1
            assert sent < 5000, "no warning"
        for _ in range(50):
            assert get(port, f"/say?full{sent}").startswith("hello")  # and on
            sent += 1
        os.unlink(filler)  # space returns
        get(port, "/say?back")
        wait_until(lambda: "said back" in open(out).read(), what="writing resumed")
        text = open(out).read()
        # The disk may take a smaller batch after refusing a larger one (the half-written batch was cut off,
        # which frees the end of the file's last page): then lines are dropped again, and counted again.
        dropped = [int(n) for n in re.findall(r"prun: warning: (\d+) log lines were dropped", text)]
        assert dropped and min(dropped) >= 1
        kept = len(re.findall(r"said full\d+", text))
        assert kept + sum(dropped) == sent  # every line either written whole or counted
        assert open(log).read().count("dropping log lines") == len(dropped)  # one warning for each time
        assert all(line.startswith(("said ", "prun: ", "greeter ")) for line in text.splitlines()), text[-500:]
    finally:
        home.cleanup()
        subprocess.run(["umount", "-l", disk])


def test_json_logs_under_the_daemon(home: Home) -> None:
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api", "-i", "2",
              "--log-format", "json")
    row = home.app("api")
    assert row["status"] == "online" and row["workers"] == 2  # the daemon read the JSON ready line
    get(home.port("api"), "/say?json")
    out = os.path.join(home.path, "logs", "api-out.log")
    wait_until(lambda: "said json" in open(out).read(), what="the request's line")
    records = [json.loads(line) for line in open(out).read().splitlines()]
    said = next(r for r in records if r["message"] == "said json")
    assert said["app"] == "api" and said["stream"] == "stdout" and said["worker"] in (0, 1)
    home.prun("reload", "api")  # returns once the daemon read the JSON "reload complete" line
    assert home.app("api")["status"] == "online"


def test_no_merge_logs_gives_each_worker_its_files(home: Home) -> None:
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api", "-i", "2",
              "--no-merge-logs")
    port = home.port("api")
    for n in range(20):
        get(port, f"/say?n{n}")
    logs = os.path.join(home.path, "logs")
    per_worker = [os.path.join(logs, f"api-out-{slot}.log") for slot in (0, 1)]
    wait_until(lambda: all(os.path.exists(p) for p in per_worker) and sum(
        open(p).read().count("said n") for p in per_worker) == 20, what="20 lines in the workers' files")
    assert all("greeter imported in pid" in open(p).read() for p in per_worker)
    assert "said" not in open(os.path.join(logs, "api-out.log")).read()
    assert "greeter says hello on stderr" in open(os.path.join(logs, "api-err-0.log")).read()
    assert "prun: ready: 2 workers" in open(os.path.join(logs, "api-err.log")).read()  # the master's own lines
    assert "\x1e" not in "".join(open(os.path.join(logs, f)).read() for f in os.listdir(logs) if f.endswith(".log"))
    shown = home.prun("logs", "api", "--nostream", "--lines", "30").stdout
    assert shown.count("said n") == 20
    home.prun("flush", "api")
    assert all(os.path.getsize(p) == 0 for p in per_worker)
