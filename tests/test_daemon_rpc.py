"""The daemon's home, its start on demand, and its RPC protocol as another program would speak it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

from prun.cluster.daemon.home import start_time
from tests.daemon_support import Home, request
from tests.support import wait_until


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_started_on_demand_private_home_and_modes(home: Home) -> None:
    assert not os.path.exists(home.path)
    out = home.prun("ping").stdout
    assert out.startswith("pong: daemon ")
    assert mode(home.path) == 0o700
    for sub in ("apps", "logs"):
        assert mode(os.path.join(home.path, sub)) == 0o700
    assert mode(os.path.join(home.path, "rpc.sock")) == 0o600
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api")
    for name in os.listdir(os.path.join(home.path, "apps")):
        assert mode(os.path.join(home.path, "apps", name)) == 0o600, name
    for name in os.listdir(os.path.join(home.path, "logs")):
        assert mode(os.path.join(home.path, "logs", name)) == 0o600, name
    home.prun("save")
    assert mode(os.path.join(home.path, "dump.json")) == 0o600


def test_a_home_others_can_write_is_refused(home: Home) -> None:
    os.makedirs(home.path)
    os.chmod(home.path, 0o777)
    result = home.prun("ls", check=False)
    assert result.returncode == 1
    assert "refusing PRUN_HOME" in result.stderr and "others can write it" in result.stderr
    assert not os.path.exists(os.path.join(home.path, "rpc.sock"))


def test_a_second_daemon_is_refused(home: Home) -> None:
    home.prun("ping")
    first = home.daemon_pid()
    second = subprocess.run([sys.executable, "-m", "prun.cluster.daemon"], env=home.env, capture_output=True,
                            text=True, timeout=30)
    assert second.returncode == 1
    assert f"a prun daemon already runs on {home.path} (pid {first})" in second.stderr
    assert home.prun("ping").stdout.startswith(f"pong: daemon {first} ")


def test_a_stale_socket_and_pid_file_start_a_new_daemon(home: Home) -> None:
    home.prun("ping")
    old = home.daemon_pid()
    assert old
    os.kill(old, 9)
    wait_until(lambda: start_time(old) is None, what="the daemon to die")
    assert os.path.exists(os.path.join(home.path, "rpc.sock"))  # left behind
    out = home.prun("ping").stdout
    new = home.daemon_pid()
    assert new and new != old and f"daemon {new} " in out


def test_malformed_oversized_and_unknown_messages_get_an_error_reply(home: Home) -> None:
    home.prun("ping")
    assert request(home, b"{not json\n")["error"]["code"] == "BAD_MESSAGE"  # type: ignore[index]
    assert request(home, b"[1, 2]\n")["error"]["code"] == "BAD_MESSAGE"  # type: ignore[index]
    assert request(home, b'{"id": 3}\n') == {"id": 3, "error": {"code": "BAD_MESSAGE",
                                                                "message": "a message needs a \"command\" string"}}
    reply = request(home, b'{"id": 4, "command": "fly"}\n')
    assert reply == {"id": 4, "error": {"code": "UNKNOWN_COMMAND", "message": "unknown command 'fly'"}}
    reply = request(home, b'{"id": 5, "command": "stop", "args": {"target": "ghost"}}\n')
    assert reply["id"] == 5 and reply["error"]["code"] == "NO_SUCH_APP"  # type: ignore[index]
    reply = request(home, b'{"id": 6, "command": "start", "args": {"spec": 1}}\n')
    assert reply["error"]["code"] == "BAD_ARGUMENTS"  # type: ignore[index]
    reply = request(home, b'{"id": 7, "command": "ping", "args": {"pad": "' + b"x" * (2 << 20) + b'"}}\n')
    assert reply["error"]["code"] == "BAD_MESSAGE" and "over" in reply["error"]["message"]  # type: ignore[index]
    with socket.socket(socket.AF_UNIX) as sock:  # several requests on one connection, answered in order
        sock.connect(os.path.join(home.path, "rpc.sock"))
        sock.sendall(b'{"id": 8, "command": "ping"}\n{"id": 9, "command": "list"}\n')
        reader = sock.makefile("rb")
        assert json.loads(reader.readline())["result"]["pong"] is True
        assert json.loads(reader.readline()) == {"id": 9, "result": []}
    assert home.prun("ping").stdout.startswith("pong")  # still up


def test_deeply_nested_requests_are_refused_in_one_line_and_the_daemon_stays_up(home: Home) -> None:
    home.prun("ping")
    daemon = home.daemon_pid()
    for depth in (100_000, 40):
        nested = b"[" * depth + b"]" * depth
        reply = request(home, b'{"id": 1, "command": "ping", "args": {"x": ' + nested + b"}}\n")
        assert reply == {"id": None, "error": {"code": "BAD_MESSAGE",
                                               "message": "refusing a message nested deeper than 32 levels"}}
        spec = {"name": "web", "target": "app:server", "mode": "cluster", "cwd": "/", "bind": "NESTED"}
        start = json.dumps({"id": 2, "command": "start", "args": {"spec": spec, "env": {}}}).encode()
        reply = request(home, start.replace(b'"NESTED"', nested) + b"\n")
        assert reply["error"] == {"code": "BAD_MESSAGE", "message": "refusing a message nested deeper than 32 levels"}
    shallow = b"[" * 20 + b"]" * 20
    reply = request(home, b'{"id": 3, "command": "ping", "args": {"x": ' + shallow + b"}}\n")
    assert reply["result"]["pong"] is True  # type: ignore[index]
    assert home.daemon_pid() == daemon and home.ls() == []


def test_the_protocol_document_lists_every_code_and_command() -> None:
    from prun.cluster.commands import RPC_COMMANDS
    from prun.cluster.daemon import rpc

    root = os.path.dirname(rpc.__file__)
    text = open(os.path.join(root, "PROTOCOL.md")).read()
    for code in rpc.CODES:
        assert f"`{code}`" in text, code
    for command in RPC_COMMANDS:
        assert f"`{command}`" in text, command


def test_the_protocol_documents_the_spec_schema_as_generated() -> None:
    from prun.cluster.daemon import rpc, schema
    from prun.cluster.daemon.spec import Spec

    text = open(os.path.join(os.path.dirname(rpc.__file__), "PROTOCOL.md")).read()
    start = text.index(schema.PROTOCOL_BEGIN) + len(schema.PROTOCOL_BEGIN)
    assert text[start:text.index(schema.PROTOCOL_END)].strip() == schema.protocol_table(Spec), \
        "run python -m prun.cluster.daemon.spec"
    assert "max_memory` (bytes, 0: none)" not in text


def test_prun_ls_imports_neither_click_nor_asyncio_nor_psutil(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "napper")
    probe = ("import sys; sys.argv = ['prun', 'ls']; from prun.cluster.commands.entry import main; main(); "
             "print(sorted(m for m in ('click', 'asyncio', 'psutil', 'prun.cluster.config') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], env=home.env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "napper" in result.stdout and result.stdout.strip().endswith("[]"), result.stdout
