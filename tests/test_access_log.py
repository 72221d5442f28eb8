"""The access log: gunicorn's access_log_format atoms (runtime/http/logs.py), and --access-log-file: written by
the master in the foreground (USR1 opens it anew), by the log writer under the daemon (rotated), each line
whole and once, never on stdout."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
from pathlib import Path

import pytest

from prun.cluster.config import build
from prun.cluster.errors import UsageError
from prun.runtime.http.logs import COMMON, AccessLog
from tests.daemon_support import Home, get
from tests.log_support import all_lines
from tests.support import wait_until

SCOPE = {"type": "http", "method": "POST", "path": "/pay", "query_string": b"id=7", "http_version": "1.1",
         "client": ("203.0.113.9", 5555),
         "headers": [(b"user-agent", b"curl/8"), (b"referer", b"https://example.org/"), (b"x-request-id", b"r-1"),
                     (b"authorization", b"Basic " + base64.b64encode(b"ann:secret"))]}


def line(fmt: str, status: int = 201, size: int = 1234, duration: float = 0.0125) -> str:
    stream = io.StringIO()
    AccessLog("common", stream, fmt).write(SCOPE, status, size, duration)
    return stream.getvalue()


def test_gunicorn_atoms() -> None:
    assert line('%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"') == \
        '203.0.113.9 - ann "POST /pay?id=7 HTTP/1.1" 201 1234 "https://example.org/" "curl/8"\n'
    assert line("%(m)s %(U)s %(q)s %(H)s %(B)s %(T)s %(M)s %(D)s %(L)s") == \
        "POST /pay id=7 HTTP/1.1 1234 0 12 12500 0.012500\n"
    assert line("%({x-request-id}i)s %({missing}i)s %({content-type}o)s %(b)s", size=0) == "r-1 - - -\n"
    assert line("%(p)s") == f"<{os.getpid()}>\n"
    stamp = line("%(t)s")
    assert stamp.startswith("[") and stamp.endswith(" +0000]\n")
    assert line(COMMON).startswith('203.0.113.9 - - [') and line(COMMON).endswith('] "POST /pay?id=7 HTTP/1.1" 201 1234\n')


def test_a_broken_format_is_refused_when_read(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="access-log-format"):
        build({"app": "m:a", "access_log_format": "%(h)d"}, {})
    assert build({"app": "m:a", "access_log_format": "%(h)s"}, {}).access_log_format == "%(h)s"


def test_foreground_access_log_file_with_a_format_reopened_on_usr1(prun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    access = tmp_path / "access.log"
    master = prun("greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "-i", "2", "--access-log-file",
                  str(access), "--access-log-format", '%(h)s "%(r)s" %(s)s %({x-id}i)s')
    port = master.wait_ready()
    for n in range(10):
        get(port, f"/say?{n}")
    wait_until(lambda: access.exists() and access.read_text().count("\n") == 10, what="ten access lines")
    # two workers: each one's lines in its order, the two interleaved as their requests came
    assert sorted(access.read_text().splitlines()) == sorted(f'127.0.0.1 "GET /say?{n} HTTP/1.1" 200 -'
                                                             for n in range(10))
    assert "GET /say" not in master.output  # not on stdout
    access.rename(tmp_path / "access.log.1")
    master.signal(signal.SIGUSR1)
    master.wait_for("reopened access log file")
    get(port, "/after")
    wait_until(lambda: access.exists() and "/after" in access.read_text(), what="a line in the new file")
    assert "/after" not in (tmp_path / "access.log.1").read_text()


def test_daemon_access_log_file_is_rotated_and_every_request_is_there_once(home: Home, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "-i", "2", "--name", "api",
              "--access-log", "json", "--access-log-file", str(access), "--log-max-size", "2K", "--log-retain", "100")
    port = home.port("api")
    for n in range(100):
        get(port, f"/say?{n}")
    wait_until(lambda: access.exists() and len(all_lines(str(access))) == 100, what="a hundred access lines")
    records = [json.loads(raw) for raw in all_lines(str(access))]
    assert sorted(int(r["path"].split("?")[1]) for r in records) == list(range(100))
    assert all(r["method"] == "GET" and r["status"] == 200 for r in records)  # as the workers wrote them (text logs)
    assert len([f for f in os.listdir(tmp_path) if f.startswith("access.log.")]) >= 3  # rotated (and .idx)
    out = Path(home.path, "logs", "api-out.log").read_text()
    assert "said 99" in out and "/say?" not in out
