"""--log-format json records (cluster/logformat.py, runtime/logrecord.py): the time formats, the fields, an app's
own JSON object merged (not encoded again), a level a line says it has, a traceback gathered into one record."""

from __future__ import annotations

import json
import re
import time

import pytest

from prun.cluster.logformat import Records, Tracebacks, level_of
from prun.runtime.logrecord import TimeFormat

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")


def test_time_is_rfc3339_with_milliseconds_and_zone_or_epoch_seconds() -> None:
    now = 1764663543.1239
    text = TimeFormat("rfc3339")(now)
    assert isinstance(text, str) and RFC3339_MS.fullmatch(text) and text[19:23] == ".123"
    local = time.localtime(now)
    assert text[:19] == time.strftime("%Y-%m-%dT%H:%M:%S", local)
    assert TimeFormat("rfc3339")(now + 1.5)[17:23] == time.strftime("%S", time.localtime(now + 1.5)) + ".623"
    assert TimeFormat("epoch")(now) == 1764663543.124
    with pytest.raises(ValueError):
        TimeFormat("iso")


def test_a_record_has_time_level_app_worker_pid_stream_message() -> None:
    records = Records("api")
    record = json.loads(records.line("hello", 1, 42, "stdout", time.time()))
    assert set(record) == {"time", "level", "app", "worker", "pid", "stream", "message"}
    assert (record["level"], record["app"], record["worker"], record["pid"], record["stream"], record["message"]) == \
        ("info", "api", 1, 42, "stdout", "hello")
    assert json.loads(records.line("oops", 0, 42, "stderr", 0.0))["level"] == "error"


def test_an_apps_json_object_is_merged_not_encoded_again() -> None:
    line = json.dumps({"event": "paid", "level": "warning", "amount": 3, "pid": 1, "message": "m"})
    record = json.loads(Records("api").line(line, 2, 42, "stdout", time.time()))
    assert record["event"] == "paid" and record["amount"] == 3 and record["message"] == "m"
    assert record["level"] == "warning"  # its own level
    assert record["pid"] == 42 and record["worker"] == 2 and record["app"] == "api"  # prun's, not its own
    assert json.loads(Records("api").line("[1, 2]", 2, 42, "stdout", 0.0))["message"] == "[1, 2]"  # not an object


@pytest.mark.parametrize(("line", "stream", "level"), [
    ("WARNING:root:careful", "stderr", "warning"), ("INFO:     started", "stderr", "info"),
    ("ERROR: no", "stdout", "error"), ("prun: warning: full", "stderr", "warning"), ("prun: ready", "stderr", "info"),
    ("Warning: mixed case", "stderr", "error"), ("plain", "stdout", "info"), ("plain", "stderr", "error"),
])
def test_the_level_a_line_says_it_has(line: str, stream: str, level: str) -> None:
    assert level_of(line, stream) == level


TRACE = ["Traceback (most recent call last):", '  File "app.py", line 3, in f', "    g()", "ValueError: boom"]
CHAINED = ["", "During handling of the above exception, another exception occurred:", "", *TRACE[:3],
           "KeyError: 'x'"]


def feed(lines: list[str]) -> tuple[list[list[str]], list[str]]:
    tracebacks = Tracebacks()
    gathered, alone = [], []
    for line in lines:
        done, taken = tracebacks.push(line)
        if done:
            gathered.append(done)
        if not taken:
            alone.append(line)
    done = tracebacks.settle()
    if done:
        gathered.append(done)
    return gathered, alone


def test_a_traceback_and_its_chained_ones_are_one_record() -> None:
    gathered, alone = feed(["before", *TRACE, *CHAINED, "after"])
    assert gathered == [[*TRACE, *CHAINED]] and alone == ["before", "after"]
    record = json.loads(Records("api").traceback(gathered[0], 0, 42, "stderr", 0.0))
    assert record["message"] == "KeyError: 'x'" and record["level"] == "error"
    assert record["traceback"] == "\n".join([*TRACE, *CHAINED])


def test_a_traceback_is_held_until_its_exception_line_and_given_at_eof() -> None:
    tracebacks = Tracebacks()
    for line in TRACE[:3]:
        assert tracebacks.push(line) == (None, True)
    assert tracebacks.settle() is None  # still in its frames: more is coming
    assert tracebacks.settle(eof=True) == TRACE[:3]


def test_a_traceback_that_never_ends_is_given_once_it_is_too_big() -> None:
    tracebacks = Tracebacks()
    tracebacks.push("Traceback (most recent call last):")
    frame = "  " + "x" * 1000
    given = [done for done, _ in (tracebacks.push(frame) for _ in range(400)) if done]
    assert len(given) == 1 and 200 < len(given[0]) < 300  # at 256 KiB, not all 400 KiB held
