"""Bad input: one clear line on stderr, a non-zero exit code, no traceback wall, no crash loop."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support import echo


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("prun: error:")]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nosuch:app"], 3, "cannot import 'nosuch': no module named 'nosuch' (looked in "),
        (["tcp:nosuch"], 3, "module 'tcp' has no attribute 'nosuch'"),
        (["broken:app", "-i", "2"], 3, "importing 'broken' failed: RuntimeError: the database is unreachable"),
        (["tcp:handle", "-i", "banana"], 2, "invalid --instances 'banana': expected a number"),
        (["tcp:handle", "--bind", "nonsense"], 2, "invalid bind address 'nonsense'"),
        (["tcp:handle", "--chdir", "/no/such/dir"], 2, "--chdir /no/such/dir: no such directory"),
        (["tcp:handle", "--config", "/no/such/prun.toml"], 2, "cannot read config file /no/such/prun.toml"),
        (["nonsense"], 2, "invalid app 'nonsense': expected MODULE:ATTR"),
        (["tcp:handle", "--timeout", "soon"], 2, "invalid --timeout 'soon': expected a number"),
        (["tcp:handle", "--no-such-flag"], 2, "No such option '--no-such-flag'"),
        (["tcp:handle", "--interface", "grpc"], 2, "invalid --interface 'grpc'"),
        (["runtime:app"], 3, "cannot import 'runtime': no module named 'runtime'"),
        (["tcp:handle", "--unix-mode", "999"], 2, "invalid --unix-mode '999': expected permissions in octal from 000"),
        (["tcp:handle", "--unix-group", "no-such-group"], 2, "invalid --unix-group 'no-such-group': no group named"),
        (["tcp:handle", "--backlog", "1000000000000"], 2, "invalid --backlog '1000000000000': expected at most 65535"),
        (["tcp:handle", "--name", "../x"], 2, "invalid --name '../x': a name is 1 to 64 letters, digits or . _ - @ +"),
        (["tcp:handle", "--port", "9000"], 2, "--bind and --host/--port both given on the command line"),
        (["tcp:handle", "--log-level", "loud"], 2, "invalid --log-level 'loud': expected one of trace, debug, info"),
        (["tcp:handle", "--env-file", "/no/such/.env"], 2, "cannot read --env-file /no/such/.env: no such file"),
        (["stauts"], 2, "unknown command 'stauts' (did you mean status?)"),
        (["tcp:handle", "--wrkers", "2"], 2, "No such option '--wrkers'. (Did you mean one of: '--workers'"),
        (["tcp:handle", "-c", "/no/such/gunicorn.conf.py"], 2, "cannot read config file /no/such/gunicorn.conf.py"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(prun, args, code, message):
    started = time.monotonic()
    master = prun(*args, "-b", "127.0.0.1:0")
    assert master.wait_exit(10) == code
    assert time.monotonic() - started < 5
    errors = _error_lines(master.output)
    assert len(errors) == 1, master.output
    assert message in errors[0]
    prun_lines = [line for line in master.output.splitlines() if line.startswith("prun:")]
    assert prun_lines[-1] == errors[0], master.output  # nothing of prun's own after the error
    assert "Traceback" not in master.output or code == 3  # an app's own traceback is shown, once
    assert master.output.count(message) == 1


def test_import_error_traceback_shows_the_apps_frame_once(prun):
    master = prun("broken:app", "-i", "2", "-b", "127.0.0.1:0")
    assert master.wait_exit(10) == 3
    assert master.output.count("Traceback (most recent call last)") == 1
    assert 'broken.py", line 3' in master.output
    assert "importlib" not in master.output


def test_bind_address_in_use(prun):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        master = prun("tcp:handle", "-b", f"127.0.0.1:{port}")
        assert master.wait_exit(10) == 1
    assert _error_lines(master.output) == [f"prun: error: cannot listen on 127.0.0.1:{port}: address already in use"]


def test_unreadable_config_file(prun, tmp_path):
    bad = tmp_path / "prun.toml"
    bad.write_text("instances = [unclosed\n")
    master = prun("tcp:handle", "--config", str(bad), "-b", "127.0.0.1:0")
    assert master.wait_exit(10) == 2
    (line,) = _error_lines(master.output)
    assert line.startswith(f"prun: error: cannot read config file {bad}: invalid TOML")


@pytest.mark.parametrize("own", ["cluster.py", "runtime/__init__.py", "prun.py"])
def test_app_beside_modules_named_like_prun_packages_is_served(prun, tmp_path, own):
    """prun imports as prun.cluster / prun.runtime: a user's cluster.py, runtime/ or prun.py cannot clash."""
    (tmp_path / own).parent.mkdir(exist_ok=True)
    (tmp_path / own).write_text("raise RuntimeError('the app directory module was imported by prun')\n")
    (tmp_path / "web.py").write_text(
        "async def handle(reader, writer):\n"
        "    writer.write(await reader.readline())\n"
        "    await writer.drain()\n"
        "    writer.close()\n"
    )
    master = prun("web:handle", "-b", "127.0.0.1:0", cwd=tmp_path)
    port = master.wait_ready()
    assert echo(port) == b"ping\n"


@pytest.mark.parametrize(("content", "message"), [
    ("unix-mode = 660\n", "invalid unix_mode in {path}: expected octal digits in quotes, such as '660', got 660"),
    ("env = " + "[" * 100_000 + "]" * 100_000 + "\n", "cannot read config file {path}: its arrays or tables are "
                                                      "nested too deeply"),
])
def test_a_config_file_value_that_cannot_be_used_is_one_line(prun, tmp_path, content, message):
    path = tmp_path / "prun.toml"
    path.write_text(content)
    master = prun("tcp:handle", "--config", str(path), "-b", "127.0.0.1:0")
    assert master.wait_exit(10) == 2
    assert _error_lines(master.output) == [f"prun: error: {message.format(path=path)}"], master.output


@pytest.mark.parametrize("args", [
    ["start"], ["stop"], ["scale", "api"], ["scale", "api", "0"], ["scale", "api", "many"], ["logs", "--lines", "x"],
    ["sendSignal", "NOSUCH", "api"], ["start", "app:x", "--bogus"], ["start", "app:x", "-i", "banana"],
    ["start", "app:x", "--port", "70000"], ["ls", "--bogus"], ["run"], ["app:x", "extra"],
])
def test_every_usage_error_of_every_command_exits_2(args, tmp_path):
    """Before any daemon is asked: a missing argument, an unknown option, a value that does not parse."""
    import os
    import subprocess

    from tests.support import prun_command

    home = tmp_path / "home"
    result = subprocess.run(prun_command() + args, capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, PRUN_HOME=str(home)), stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result
    assert result.stderr.startswith("prun: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not home.exists()  # no daemon was started for it
