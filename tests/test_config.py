"""A reload (HUP) re-reads the config file: reloadable options take effect, the others are reported and kept."""

from __future__ import annotations

import http.client
import io
import socket

import pytest

from prun.cluster.config import Reconfigure, build
from prun.cluster.errors import UsageError
from prun.cluster.log import Log
from tests.support import wait_until

GREETER = '''
import os


async def app(scope, receive, send):
    if scope["type"] == "http":
        body = os.environ.get("GREETING", "").encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
'''


def _greeting(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


def _closed_by_server_within(port: int, seconds: float) -> bool:
    """A keep-alive connection, idle after one request: does the server close it within `seconds`?"""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            return False
        return True


def test_reload_applies_reloadable_options_and_reports_the_others(prun, tmp_path):
    (tmp_path / "greeter.py").write_text(GREETER)
    config = tmp_path / "prun.toml"
    config.write_text('app = "greeter:app"\nenv = { GREETING = "one" }\nkeepalive-timeout = 60\n')
    master = prun("--config", str(config), "-b", "127.0.0.1:0", cwd=tmp_path)
    port = master.wait_ready()
    assert _greeting(port) == b"one"
    config.write_text('app = "greeter:app"\nenv = { GREETING = "two" }\nkeepalive-timeout = 0.5\n'
                      'balance = "shared"\ninstances = 3\nbacklog = 10\n')
    mark = master.mark()
    master.reload("reload complete: 1 worker on gen 2")
    lines = [line for line in master.output.splitlines()[mark:] if line.startswith("prun: reload: ")]
    assert sorted(lines) == sorted([
        "prun: reload: --instances changed to 3; it needs a restart (kept 1)",
        "prun: reload: --env changed (keys now: GREETING)",
        "prun: reload: --backlog changed to 10; it needs a restart (kept 2048)",
        "prun: reload: --balance changed to shared; it needs a restart (kept leastconn)",
        "prun: reload: --keepalive-timeout changed to 0.5 (was 60)",
    ])
    assert "two" not in master.output  # values of env are not logged: they may be secrets
    assert _greeting(port) == b"two"
    assert _closed_by_server_within(port, 5.0)
    # --instances was kept: still one worker (scaling is TTIN/TTOU's)
    assert len(wait_until(lambda: len(master.workers()) == 1 and master.workers())) == 1

    mark = master.mark()  # nothing changed since: a second reload says nothing about options
    master.reload("reload complete: 1 worker on gen 3")
    assert not [line for line in master.output.splitlines()[mark:] if line.startswith("prun: reload: ")]
    assert _greeting(port) == b"two"


def test_reconfigure_returns_the_new_reloadable_values_and_the_running_others(tmp_path):
    config = tmp_path / "prun.toml"
    config.write_text('app = "m:a"\ngraceful-timeout = 10\nbind = ["127.0.0.1:1"]\n')
    cli = {"config": str(config), "chdir": str(tmp_path)}
    running = build(cli, {})
    stream = io.StringIO()
    reconfigure = Reconfigure(cli, {}, running, Log(stream=stream))
    config.write_text('app = "m:b"\ngraceful-timeout = 3\nbind = ["127.0.0.1:2"]\n')
    new = reconfigure()
    assert (new.graceful_timeout, new.bind, new.app) == (3.0, ["127.0.0.1:1"], "m:a")
    assert stream.getvalue().splitlines() == [
        "prun: reload: APP changed to m:b; it needs a restart (kept m:a)",
        "prun: reload: --bind changed to 127.0.0.1:2; it needs a restart (kept 127.0.0.1:1)",
        "prun: reload: --graceful-timeout changed to 3 (was 10)",
    ]
    config.write_text('app = "m:b"\ngraceful-timeout = oops\n')
    with pytest.raises(UsageError, match="invalid TOML"):
        reconfigure()
