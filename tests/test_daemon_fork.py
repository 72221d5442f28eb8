"""Fork mode: commands and scripts supervised like workers (no listener), with the same commands."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import psutil

from prun.cluster.client import Client
from tests.daemon_support import Events, Home
from tests.support import wait_until


def starts(home: Home, name: str) -> list[float]:
    with open(os.path.join(home.path, "logs", f"{name}-out.log")) as fh:
        return [float(m) for m in re.findall(r"crasher instance 0 started at ([\d.]+)", fh.read())]


def test_a_crashing_script_is_restarted_with_backoff(home: Home) -> None:
    started = home.prun("start", "crasher.py", check=False)  # it cannot get online: the start says so, in a line
    assert started.returncode == 1 and started.stderr.count("\n") == 1, started.stderr
    assert "crasher could not start: instance 0" in started.stderr and "(retrying with backoff)" in started.stderr
    times = wait_until(lambda: (lambda t: len(t) >= 5 and t)(starts(home, "crasher")), timeout=30,
                       what="five starts of the crashing script")
    err = open(os.path.join(home.path, "logs", "crasher-err.log")).read()
    delays = [float(d) for d in re.findall(r"instance 0 \(pid \d+\) exited with code 1; restarting it in ([\d.]+)s",
                                           err)][:4]
    assert delays == [0.1, 0.15, 0.23, 0.34], delays  # 100 ms x 1.5 each time, as workers
    gaps = [b - a for a, b in zip(times, times[1:])][:4]
    assert all(gap >= delay for gap, delay in zip(gaps, delays)), (gaps, delays)
    row = home.app("crasher")
    assert row["mode"] == "fork" and row["status"] == "launching" and row["listen"] == [] and row["restarts"] >= 4


def test_a_command_with_instances_reload_scale_stop(home: Home) -> None:
    home.prun("start", "sleep 1000", "-i", "3", "--name", "sleepers", "--env", "MARK=fork-test")
    row = home.app("sleepers")
    assert (row["status"], row["workers"], row["mode"]) == ("online", 3, "fork")

    def sleepers() -> list[psutil.Process]:
        return [p for p in psutil.Process(row["pid"]).children() if p.name() == "sleep"]

    first = {p.pid for p in wait_until(lambda: (lambda s: len(s) == 3 and s)(sleepers()), what="3 sleeps")}
    assert all(p.environ().get("MARK") == "fork-test" for p in sleepers())
    assert sorted(p.environ()["PRUN_INSTANCE"] for p in sleepers()) == ["0", "1", "2"]
    home.prun("reload", "sleepers")
    second = {p.pid for p in wait_until(lambda: (lambda s: len(s) == 3 and s)(sleepers()), what="3 new sleeps")}
    assert not first & second and home.app("sleepers")["restarts"] == 1
    home.prun("scale", "sleepers", "-2")
    assert home.app("sleepers")["workers"] == 1
    wait_until(lambda: len(sleepers()) == 1, what="one sleep left")
    victim = sleepers()[0]
    victim.send_signal(signal.SIGKILL)  # an instance that dies is restarted by its supervisor
    wait_until(lambda: (lambda s: len(s) == 1 and s[0].pid != victim.pid)(sleepers()), what="a new sleep")
    home.prun("stop", "sleepers")
    assert home.app("sleepers")["status"] == "stopped"
    assert not psutil.pid_exists(row["pid"]) or psutil.Process(row["pid"]).status() == psutil.STATUS_ZOMBIE


def test_a_missing_script_is_one_line(home: Home) -> None:
    result = home.prun("start", "nowhere.py", check=False)
    assert result.returncode == 1 and result.stderr.strip().endswith("no such file in " + str(
        os.path.dirname(os.path.abspath(__file__))) + "/apps")


JOB = """\
import os, sys, time
print(f"job {os.environ['PRUN_INSTANCE']} pid {os.getpid()}", flush=True)
data = b"x" * (int(os.environ.get("HOLD_MB", "0")) << 20)  # written: resident
time.sleep(1000)
"""
STUBBORN_CHILD = ("import os, signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child', os.getpid(), flush=True); "
                  "time.sleep(77)")


def project(home: Home) -> Path:
    where = Path(home.root, "project")
    where.mkdir(exist_ok=True)
    (where / "job.py").write_text(JOB)
    return where


def instance_pids(home: Home, name: str) -> dict[str, int]:
    """The pid each instance printed last, by its number."""
    log = Path(home.path, "logs", f"{name}-out.log")
    text = log.read_text() if log.exists() else ""
    return {number: int(pid) for number, pid in re.findall(r"job (\d+) pid (\d+)", text)}


def test_watch_restarts_a_fork_apps_instances_one_by_one(home: Home) -> None:
    where = project(home)
    home.prun("start", "job.py", "-i", "2", "--watch", "--min-uptime", "200", cwd=where)
    first = wait_until(lambda: (lambda p: len(p) == 2 and p)(instance_pids(home, "job")), what="both instances")
    (where / "settings.txt").write_text("changed\n")
    second = wait_until(lambda: (lambda p: all(p[n] != first[n] for n in p) and p)(instance_pids(home, "job")),
                        what="both instances restarted")
    assert set(second) == {"0", "1"} and not set(first.values()) & set(second.values())
    row = wait_until(lambda: (lambda r: r["restarts"] == 1 and r)(home.app("job")), what="one restart counted")
    assert (row["status"], row["workers"]) == ("online", 2)
    err = Path(home.path, "logs", "job-err.log").read_text()
    assert "changed: settings.txt; reloading" in err and "reload complete: 2 workers" in err


def test_a_fork_app_writes_its_pid_file_and_removes_it_at_the_stop(home: Home) -> None:
    where = project(home)
    home.prun("start", "job.py", "--name", "pidded", "--pid-file", "job.pid", "--min-uptime", "200", cwd=where)
    assert (where / "job.pid").read_text() == f"{home.app('pidded')['pid']}\n"  # the supervisor's, as a master's
    home.prun("stop", "pidded")
    assert not (where / "job.pid").exists()


def test_a_fork_instance_over_max_memory_restart_is_restarted_with_an_event(home: Home) -> None:
    where = project(home)
    client = Client(home.path)
    client.ping()
    events = Events(client)
    home.prun("start", "job.py", "--name", "fat", "--max-memory-restart", "30M", "--min-uptime", "200",
              "--env", "HOLD_MB=60", cwd=where)
    first = wait_until(lambda: instance_pids(home, "fat"), what="the instance")["0"]
    hit = events.wait("fat", "memory_limit")
    assert (hit["pid"], hit["worker"], hit["limit"]) == (first, "worker 0", 30 << 20) and hit["memory"] > 60 << 20
    wait_until(lambda: instance_pids(home, "fat")["0"] != first, what="a new instance")
    assert home.app("fat")["restarts"] >= 1
    err = Path(home.path, "logs", "fat-err.log").read_text()
    assert re.search(rf"instance 0 \(pid {first}\) uses [\d.]+ MB of memory, over --max-memory-restart "
                     rf"\(\d+ > {30 << 20} bytes\): restarting it", err), err


def alive(process: psutil.Process) -> bool:
    """Running, not a zombie (whoever adopted it may reap it late)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_children_that_ignore_the_kill_signal_are_killed_after_kill_timeout(home: Home) -> None:
    """sh -c '... & sleep 77': the shell dies of SIGINT, the child it started ignores it (and SIGTERM); SIGKILL
    comes at --kill-timeout (7 s here, beyond the 5 s the daemon's sweep used to give whatever the option said)."""
    command = f"{sys.executable} -c {shlex.quote(STUBBORN_CHILD)} & sleep 77"
    home.prun("start", command, "--name", "shelled", "--kill-timeout", "7000", "--min-uptime", "200")
    log = Path(home.path, "logs", "shelled-out.log")
    child = psutil.Process(int(wait_until(lambda: re.search(r"child (\d+)", log.read_text()),
                                          what="the child").group(1)))
    shell = psutil.Process(child.ppid())
    assert shell.name() in ("sh", "dash")
    gone: dict[str, float] = {}

    def watch(name: str, process: psutil.Process) -> None:
        wait_until(lambda: not alive(process), timeout=60, interval=0.02, what=f"the {name} to end")
        gone[name] = time.monotonic()

    watchers = [threading.Thread(target=watch, args=item) for item in (("shell", shell), ("child", child))]
    for watcher in watchers:
        watcher.start()
    home.prun("stop", "shelled")
    for watcher in watchers:
        watcher.join(timeout=60)
    assert set(gone) == {"shell", "child"} and 6.0 <= gone["child"] - gone["shell"] < 20, gone
    assert home.app("shelled")["status"] == "stopped"
