"""--log-format json with real processes: every record of a run parses; an exception (in a request, at boot, one
an app prints itself) is one record with its traceback in a field; an app's JSON line is an object, not a
string; the time is RFC 3339 with milliseconds and zone (or epoch seconds); under the daemon (cluster and fork
mode) and in the foreground."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tests.daemon_support import Home, get
from tests.log_support import all_lines
from tests.support import wait_until

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")
FIELDS = {"time", "level", "app", "worker", "pid", "stream"}


def records(path: str) -> list[dict[str, Any]]:
    """Every line of a log file (and its rotated ones), each parsed: a line that is not JSON fails here."""
    found = []
    for line in all_lines(path):
        record = json.loads(line)
        assert isinstance(record, dict) and FIELDS <= set(record), line
        assert RFC3339_MS.fullmatch(record["time"]), record["time"]
        found.append(record)
    return found


def no_traceback_lines(found: list[dict[str, Any]]) -> None:
    """No record is a piece of a traceback: each traceback is in one record's `traceback` field."""
    for record in found:
        message = str(record.get("message", ""))
        assert not message.startswith(("Traceback (most recent", "  File ", "    ")), record


def test_daemon_cluster_a_request_exception_and_a_boot_failure_are_one_record_each(home: Home, tmp_path: Path) -> None:
    fail = tmp_path / "fail-boot"
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api", "-i", "2",
              "--log-format", "json", "--env", f"BOOT_FAIL_FILE={fail}")
    port = home.port("api")
    for path in ("/say?plain", "/json?hi", "/print-traceback"):
        get(port, path)
    try:
        get(port, "/raise?in-a-request")
    except AssertionError:  # 500
        pass
    fail.touch()  # the next start cannot import the app
    restarted = home.prun("restart", "api", check=False)
    assert restarted.returncode != 0
    logs = os.path.join(home.path, "logs")
    out, err = os.path.join(logs, "api-out.log"), os.path.join(logs, "api-err.log")
    wait_until(lambda: any("could not boot" in str(r.get("message")) for r in records(err)), what="the boot failure")
    found = records(out) + records(err)
    no_traceback_lines(found)
    assert all(r["app"] == "api" for r in found)
    [request] = [r for r in found if r.get("message") == "exception in the app (GET /raise?in-a-request)"]
    assert request["traceback"].endswith("ValueError: boom in-a-request") and request["worker"] in (0, 1)
    assert request["level"] == "error" and request["stream"] == "stderr"
    [printed] = [r for r in found if r.get("message") == "KeyError: 'missing'"]
    assert printed["traceback"].startswith("Traceback (most recent call last):")
    [own] = [r for r in found if r.get("event") == "greeted"]
    assert own["text"] == "hi" and own["level"] == "warning" and own["stream"] == "stdout" and "message" not in own
    boots = [r for r in found if "could not boot" in str(r.get("message"))]
    assert boots and all("RuntimeError: the boot-fail file exists" in r["traceback"] for r in boots)
    assert all(r["worker"] is None and r["level"] == "error" for r in boots)  # the master's own record
    said = [r for r in found if r.get("message") == "said plain"]
    assert len(said) == 1 and said[0]["level"] == "info" and said[0]["pid"] != boots[0]["pid"]


RAISER = """
import json, os, sys, time
print("an instance starts", flush=True)
print(json.dumps({"event": "tick", "n": 1}), flush=True)
if os.path.exists(sys.argv[1]):
    time.sleep(600)
open(sys.argv[1], "w").close()
raise LookupError("no such thing")
"""


def test_daemon_fork_mode_instances_records_and_their_traceback(home: Home, tmp_path: Path) -> None:
    script = tmp_path / "raiser.py"
    script.write_text(RAISER)
    mark = tmp_path / "raised"
    started = home.prun("start", f"{script} {mark}", "--name", "raiser", "--log-format", "json", "--log-json-time",
                        "rfc3339", check=False)
    assert started.returncode == 1 and "(retrying with backoff)" in started.stderr  # its first run raised at once
    err = os.path.join(home.path, "logs", "raiser-err.log")
    out = os.path.join(home.path, "logs", "raiser-out.log")
    wait_until(lambda: sum(r.get("message") == "an instance starts" for r in records(out)) == 2,
               what="the instance started again after its exception")
    found = records(out) + records(err)
    no_traceback_lines(found)
    [raised] = [r for r in found if "traceback" in r]
    assert raised["message"] == "LookupError: no such thing" and raised["worker"] == 0 and raised["app"] == "raiser"
    ticks = [r for r in found if r.get("event") == "tick"]
    assert len(ticks) == 2 and all(r["n"] == 1 and r["worker"] == 0 for r in ticks)
    supervisor = [r for r in found if r["worker"] is None]
    assert any(re.fullmatch(r"instance 0 \(pid \d+\) exited with code 1; restarting it in [\d.]+s", r["message"])
               for r in supervisor)
    assert all(r["level"] == "info" for r in supervisor)  # 'prun: ...' lines: the supervisor's own, not errors


def test_foreground_a_boot_failure_is_one_record_and_epoch_times(prun) -> None:  # type: ignore[no-untyped-def]
    master = prun("broken:app", "-b", "127.0.0.1:0", "--log-format", "json", "--log-json-time", "epoch")
    assert master.wait_exit() == 3
    lines = [json.loads(line) for line in master.output.splitlines()]
    assert all(isinstance(r["time"], float) for r in lines)
    [boot] = [r for r in lines if "traceback" in r]
    assert boot["traceback"].rstrip().endswith("RuntimeError: the database is unreachable")
    assert "could not boot" in boot["message"]
    no_traceback_lines(lines)


def test_foreground_a_port_in_use_is_a_json_record_too(prun) -> None:  # type: ignore[no-untyped-def]
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        master = prun("greeter:app", "-b", f"127.0.0.1:{taken.getsockname()[1]}", "--log-format", "json")
        assert master.wait_exit() == 1
    finally:
        taken.close()
    [record] = [json.loads(line) for line in master.output.splitlines()]
    assert record["level"] == "error" and "address already in use" in record["message"]
