"""What the worker serves, told from the app's shape in real workers: factories without --factory too."""

from __future__ import annotations

import http.client
import signal

import psutil

from tests.support import echo, wait_until
from tests.test_bad_input import _error_lines

FACTORIES = '''
import asyncio


async def asgi(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"7")]})
        await send({"type": "http.response.body", "body": b"factory"})


def create_app():
    return asgi


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def echo_factory():
    return Echo()


def make_nothing():
    return None


def broken_factory():
    raise RuntimeError("no database")
'''


def _get(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _answers(port: int) -> tuple[int, bytes] | None:
    try:
        return _get(port)
    except OSError:
        return None


def test_an_app_factory_without_factory_flag_is_called_with_one_warning(prun, tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    master = prun("factories:create_app", "-i", "2", "-b", "127.0.0.1:0", cwd=tmp_path)
    port = master.wait_ready()
    assert _get(port) == (200, b"factory")
    warnings = [line for line in master.output.splitlines() if "warning" in line]
    assert warnings == ["prun: warning: 'factories:create_app' is an app factory: prun called it to get the app "
                        "(pass --factory to say so)"]


def test_the_factory_warning_is_quiet_under_log_level_error(prun, tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    master = prun("factories:create_app", "-b", "127.0.0.1:0", "--log-level", "error", cwd=tmp_path)
    # nothing says where it listens at this level: the master's listening socket does
    port = wait_until(lambda: next((c.laddr.port for c in psutil.Process(master.master_pid).net_connections("tcp")
                                    if c.status == psutil.CONN_LISTEN), None), what="a listener")
    assert wait_until(lambda: _answers(port), what="an answer") == (200, b"factory")
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    assert master.output == ""  # not the factory warning either


def test_an_app_factory_with_factory_flag_has_no_warning(prun, tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    master = prun("factories:create_app", "--factory", "-b", "127.0.0.1:0", cwd=tmp_path)
    port = master.wait_ready()
    assert _get(port) == (200, b"factory")
    assert "warning" not in master.output


def test_protocol_factories_and_classes_are_still_protocols(prun, tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    for app in ("factories:echo_factory", "factories:Echo", "tcp:EchoProtocol"):
        master = prun(app, "-b", "127.0.0.1:0", cwd=tmp_path if app.startswith("factories") else None)
        port = master.wait_ready()
        assert echo(port) == b"ping\n", app
        assert "warning" not in master.output


def test_a_function_that_makes_no_app_stops_the_boot_with_one_line(prun, tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    for app, message in [
        ("factories:make_nothing", "'factories:make_nothing' takes no arguments and returned NoneType, which is "
                                   "neither an app nor an asyncio protocol (for an app factory, pass --factory)"),
        ("factories:broken_factory", "it failed: RuntimeError: no database (pass --factory for an app factory"),
    ]:
        master = prun(app, "-i", "2", "-b", "127.0.0.1:0", cwd=tmp_path)
        assert master.wait_exit(15) == 3
        (line,) = _error_lines(master.output)
        assert message in line, master.output
