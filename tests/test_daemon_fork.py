"""Fork mode: commands and scripts supervised like workers (no listener), with the same commands."""

from __future__ import annotations

import os
import re
import signal

import psutil

from tests.daemon_support import Home
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
