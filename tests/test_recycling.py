"""Automatic recycling through the lossless path: --max-memory-restart, --watch, --cron-restart."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time

import pytest

from prun.cluster.cron import Schedule
from tests.daemon_support import HttpLoad, get
from tests.support import APPS, wait_until


def test_a_leaking_app_is_recycled_worker_by_worker_with_no_failed_request(prun):
    master = prun("leaky:app", "--lifespan", "off", "-i", "2", "-b", "127.0.0.1:0", "--max-memory-restart", "60M")
    port = master.wait_ready()
    first = set(master.workers())
    with HttpLoad(port) as load:
        wait_until(lambda: len(re.findall(r"over --max-memory-restart .*: replacing it", master.output)) >= 3,
                   timeout=60, what="three workers recycled for their memory")
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]
    assert {int(pid) for pid in re.findall(r"pid (\d+), gen 1\) uses", master.output)} & first
    assert "restarting it" not in master.output  # replaced, never killed
    assert master.proc.poll() is None


def test_a_watched_edit_reloads_once_losslessly_and_ignored_files_do_not(prun, tmp_path):
    shutil.copy(APPS / "greeter.py", tmp_path / "greeter.py")
    master = prun("greeter:app", "--lifespan", "off", "-i", "2", "-b", "127.0.0.1:0", "--chdir", str(tmp_path),
                  "--watch", "--ignore-watch", "*.log", env={"GREETING": "hi"})
    port = master.wait_ready()
    master.wait_for("watching ")
    assert get(port).startswith("hi ")
    with HttpLoad(port) as load:
        load.wait_requests(10)
        mark = master.mark()
        (tmp_path / "noise.log").write_text("not code\n")
        source = (tmp_path / "greeter.py").read_text()
        for n in range(3):  # a burst of saves: one reload
            (tmp_path / "greeter.py").write_text(source.replace("'GREETING', 'hello'", f"'NOPE{n}', 'edited'"))
        master.wait_for("reload complete", start=mark, timeout=30)
        load.wait_requests(10)
    assert load.failed == 0, load.errors[:5]
    changed = master.output[mark:]
    assert changed.count("reloading:") == 1 and "changed: greeter.py; reloading" in changed, changed
    assert "noise.log" not in changed
    assert get(port).startswith("edited ")


def test_cron_restart_with_seconds_reloads_on_schedule(prun):
    master = prun("greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--cron-restart", "*/2 * * * * *")
    master.wait_ready()
    master.wait_for(r"--cron-restart '\*/2 \* \* \* \* \*': reloading", timeout=10)
    master.wait_for("reload complete", timeout=20)


def test_a_bad_cron_expression_is_one_line_and_exit_2(prun):
    master = prun("greeter:app", "--cron-restart", "0 25 * * *")
    assert master.wait_exit(15) != 0
    assert "invalid --cron-restart '0 25 * * *'" in master.output and "outside 0-23" in master.output


def at(text: str) -> float:
    return time.mktime(dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timetuple())


def when(expression: str, after: str) -> str:
    return dt.datetime.fromtimestamp(Schedule.parse(expression).next_after(at(after))).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("0 3 * * *", "2026-12-01 02:59:59", "2026-12-01 03:00:00"),
    ("0 3 * * *", "2026-12-01 03:00:00", "2026-12-02 03:00:00"),  # strictly after
    ("*/15 * * * *", "2026-12-01 10:07:30", "2026-12-01 10:15:00"),
    ("30 8 * * mon-fri", "2026-12-04 09:00:00", "2026-12-07 08:30:00"),  # Friday after 8:30 -> Monday
    ("0 0 1 jan *", "2026-06-15 12:00:00", "2027-01-01 00:00:00"),
    ("0 12 13 * 5", "2026-12-01 00:00:00", "2026-12-04 12:00:00"),  # day 13 OR a Friday (Vixie cron)
    ("0 0 * * 7", "2026-12-01 00:00:00", "2026-12-06 00:00:00"),  # 7 is Sunday
    ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),  # the next leap day
    ("*/10 * * * * *", "2026-12-01 10:00:05", "2026-12-01 10:00:10"),  # six fields: seconds first
    ("5,35 1-2 * * *", "2026-12-01 01:36:00", "2026-12-01 02:05:00"),
])
def test_cron_schedule(expression: str, after: str, expected: str) -> None:
    assert when(expression, after) == expected


@pytest.mark.parametrize(("expression", "message"), [
    ("* * *", "expected 5 fields"), ("61 * * * *", "outside 0-59"), ("* * * foo *", "not a number or a name"),
    ("*/0 * * * *", "invalid step"), ("5-1 * * * *", "outside"),
])
def test_cron_errors(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule.parse(expression)
    with pytest.raises(ValueError, match="matches no time"):
        Schedule.parse("0 0 30 2 *").next_after(time.time())
