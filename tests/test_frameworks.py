"""Each framework's app under prun and under the server its users run today (uvicorn for ASGI, gunicorn for
WSGI): the same requests, and a client must see the same answers (status, reason, headers, body).

The apps are in tests/apps/frameworks.py. What may differ is what belongs to the server, not to the app:
the Date and Server headers, and how the connection is kept (gunicorn's sync worker closes each one).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.support import APPS, wait_until

ASGI = ["starlette_app", "fastapi_app", "quart_app", "litestar_app", "sanic_app", "falcon_asgi", "django_asgi"]
WSGI = ["flask_app", "falcon_wsgi", "django_wsgi"]
ENV = {"DJANGO_SETTINGS_MODULE": "frameworks"}
SERVERS_OWN = {"date", "server", "connection", "keep-alive"}
BIG = b"x" * (1 << 20)
REQUESTS = [  # (method, path, headers, body)
    ("GET", "/items/7?q=x", {"x-token": "t"}, b""),
    ("GET", "/items/7?q=%C3%A9t%C3%A9+x&q=second", {}, b""),
    ("HEAD", "/items/7", {}, b""),
    ("POST", "/items/7", {"content-type": "application/octet-stream"}, b"payload" * 1000),
    ("POST", "/items/8", {"content-type": "application/octet-stream"}, BIG),
    ("GET", "/stream", {}, b""),
    ("GET", "/redirect", {}, b""),
    ("GET", "/text", {}, b""),
    ("GET", "/boom", {}, b""),
    ("GET", "/nowhere", {"accept": "text/html"}, b""),
    ("GET", "/items/not-a-number", {}, b""),
    ("DELETE", "/items/7", {}, b""),
    ("GET", "/items/7/", {}, b""),
]


def ask(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[object, ...]:
    """What a client sees of one request, less what belongs to the server."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body or None, headers={"host": "api.example", **headers})  # one Host for both
        reply = conn.getresponse()
        content = reply.read()
        seen = sorted((name.lower(), _allowed(value) if name.lower() == "allow" else value)
                      for name, value in reply.getheaders() if name.lower() not in SERVERS_OWN)
        if method != "HEAD":  # a body sent whole with its length or in chunks: the client reads the same body
            seen = [(name, value) for name, value in seen if (name, value) != ("transfer-encoding", "chunked")
                    and (name, value) != ("content-length", str(len(content)))]
        return reply.status, reply.reason, seen, content
    finally:
        conn.close()


def _allowed(value: str) -> str:
    """A 405's methods in a fixed order (a framework lists them from a set: in any order, run to run)."""
    return ", ".join(sorted(method.strip() for method in value.split(",")))


def answers(port: int) -> bool:
    try:
        ask(port, "GET", "/items/1", {}, b"")
        return True
    except OSError:
        return False


@contextmanager
def reference(app: str, interface: str, log: Path) -> Iterator[int]:
    """The app under uvicorn (ASGI) or gunicorn (WSGI, its sync worker), on a listener made here, its output
    in `log`; its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    fd = listener.fileno()
    if interface == "asgi":
        command = [sys.executable, "-m", "uvicorn", "--fd", str(fd), "--log-level", "warning", f"frameworks:{app}"]
    else:
        command = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", "1", "--log-level",
                   "warning", f"frameworks:{app}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=APPS, env={**os.environ, **ENV}, pass_fds=[fd], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        port = listener.getsockname()[1]
        wait_until(lambda: proc.poll() is not None or answers(port), timeout=30, what=f"{command[2]} serving")
        assert proc.poll() is None, f"{command[2]} exited with {proc.returncode}: {log.read_text()[-2000:]}"
        yield port
    finally:
        listener.close()
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass


CASES = [(app, "asgi") for app in ASGI] + [(app, "wsgi") for app in WSGI]


@pytest.mark.parametrize(("app", "interface"), CASES, ids=[app for app, _ in CASES])
def test_a_client_sees_the_same_answers_under_prun_as_under_uvicorn_or_gunicorn(prun, tmp_path: Path, app: str,
                                                                                 interface: str) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip(app.partition("_")[0])  # each app is named after its framework
    pytest.importorskip("uvicorn" if interface == "asgi" else "gunicorn")
    master = prun(f"frameworks:{app}", "-b", "127.0.0.1:0", "--interface", interface, env=ENV)
    port = master.wait_ready()
    log = tmp_path / "reference.log"
    with reference(app, interface, log) as other:
        for method, path, headers, body in REQUESTS:
            theirs = ask(other, method, path, headers, body)
            ours = ask(port, method, path, headers, body)
            assert ours == theirs, f"{method} {path}"

        def logged() -> tuple[bool, bool]:
            return "RuntimeError: boom" in master.output, "RuntimeError: boom" in log.read_text()

        # the app's error is logged by both or by neither (once one has it, the other gets a few seconds)
        if any(logged()):
            wait_until(lambda: all(logged()), timeout=5, what=f"the error in both logs, not only in one: {logged()}")
