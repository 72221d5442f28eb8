"""What the client checks before it sends anything (whose home, whose socket, whose daemon), and how long any
command may wait for a daemon that does not answer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from prun.cluster.client import Client, ClientError
from tests.daemon_support import Home, start_stubborn, stubborn_started
from tests.support import APPS, prun_command, wait_until

NOBODY = 65534
root_only = pytest.mark.skipif(os.getuid() != 0, reason="needs root to make files of another user")


@contextmanager
def listening(path: str) -> Iterator[socket.socket]:
    """A listening socket at `path` that never accepts by itself: what a client sent is found afterwards."""
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(16)
        listener.setblocking(False)
        yield listener


def received(listener: socket.socket) -> bytes:
    """Every byte clients sent to `listener` (call once they have exited: their data and EOF are queued)."""
    data = b""
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return data
        with conn:
            conn.setblocking(True)
            conn.settimeout(5)
            while chunk := conn.recv(65536):
                data += chunk


def refused(home: Home, *args: str) -> str:
    """The one line a command ended with, having exited 1 with nothing on stdout."""
    result = home.prun(*args, check=False, timeout=30)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def private_home(home: Home) -> str:
    os.makedirs(home.path, mode=0o700)
    return os.path.join(home.path, "rpc.sock")


@root_only
def test_a_socket_of_another_user_gets_nothing(home: Home) -> None:
    path = private_home(home)
    with listening(path) as fake:
        os.chown(path, NOBODY, NOBODY)
        for args in (["ls"], ["ping"], ["start", "sleep 1000", "--name", "napper"], ["stop", "all"], ["kill"]):
            line = refused(home, *args)
            assert line == f"prun: error: refusing {path}: it belongs to uid {NOBODY}, not to you", args
        assert received(fake) == b""
    assert not os.path.exists(os.path.join(home.path, "daemon.pid")) and not home.ours()


def test_a_socket_others_may_use_gets_nothing(home: Home) -> None:
    path = private_home(home)
    with listening(path) as fake:
        os.chmod(path, 0o666)
        assert refused(home, "ls") == (f"prun: error: refusing {path}: others may connect to it (mode 0666; the "
                                       f"daemon makes it 0600)")
        assert received(fake) == b""


def test_a_symlink_or_a_file_in_place_of_the_socket_gets_nothing(home: Home) -> None:
    path = private_home(home)
    elsewhere = os.path.join(home.root, "elsewhere.sock")
    with listening(elsewhere) as fake:
        os.symlink(elsewhere, path)
        assert refused(home, "ls") == f"prun: error: refusing {path}: it is a symlink, not a socket"
        os.unlink(path)
        with open(path, "w"):
            pass
        assert refused(home, "ls") == f"prun: error: refusing {path}: it is not a socket"
        assert received(fake) == b""


@root_only
def test_a_home_of_another_user_is_refused_on_every_command(home: Home) -> None:
    path = private_home(home)
    with listening(path) as fake:  # a socket of ours, in a home that is not
        os.chown(home.path, NOBODY, NOBODY)
        for args in (["ls"], ["ls", "--json"], ["describe", "all"], ["kill"]):
            line = refused(home, *args)
            assert line == f"prun: error: refusing PRUN_HOME {home.path}: it belongs to uid {NOBODY}, not to you"
        assert received(fake) == b""


@root_only
def test_a_daemon_of_another_user_behind_our_own_socket_file_gets_nothing(home: Home) -> None:
    """The socket file passes every check (ours, 0600), but the process listening on it is nobody's."""
    path = private_home(home)
    with listening_as_nobody(home, path) as report:
        assert refused(home, "ls") == (f"prun: error: refusing {path}: the process listening on it (pid "
                                       f"{report['pid']}) runs as uid {NOBODY}, not as you")
    assert report["received"] == ""


@contextmanager
def listening_as_nobody(home: Home, path: str) -> Iterator[dict[str, object]]:
    """A child running as nobody listens on `path` (a file then made ours and 0600); on leaving, the dict holds
    the child's pid and every byte clients sent it."""
    spot = os.path.join(home.root, "spot")
    os.mkdir(spot)
    os.chown(spot, NOBODY, NOBODY)
    os.chmod(home.root, 0o711)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)
            os.close(done_w)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with listening(os.path.join(spot, "s")) as listener:
                os.write(ready_w, b"listening")
                os.read(done_r, 1)
                os.write(ready_w, json.dumps(received(listener).decode()).encode())
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    report: dict[str, object] = {"pid": pid}
    try:
        assert os.read(ready_r, 9) == b"listening"
        os.rename(os.path.join(spot, "s"), path)
        os.chown(path, os.getuid(), os.getgid())
        os.chmod(path, 0o600)
        yield report
    finally:
        os.close(done_w)
        with os.fdopen(ready_r, "rb") as pipe:
            report["received"] = json.loads(pipe.read() or b'"the child failed"')
        os.waitpid(pid, 0)




def test_a_stopped_daemon_makes_every_command_give_up_with_one_line(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "napper")
    pid = home.daemon_pid()
    assert pid
    commands = (["ls"], ["ls", "--json"], ["ping"], ["describe", "napper"], ["reload", "napper"],
                ["stop", "napper"], ["kill"])
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        running = [subprocess.Popen(prun_command() + args, cwd=str(APPS), env=home.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in commands]
        try:
            for args, proc in zip(commands, running):
                out, err = proc.communicate(timeout=30)
                took = time.monotonic() - started
                assert proc.returncode == 1 and out == "", (args, proc.returncode, out, err)
                assert took < 15, (args, took)
                lines = err.splitlines()
                assert len(lines) == 1 and lines[0].startswith(
                    f"prun: error: the prun daemon (pid {pid}) did not answer within 5 s: "), (args, err)
                acting = args[0] in ("reload", "stop")
                assert (f"(the {args[0]} it was sent may still be carried out)" in err) is acting, err
        finally:
            for proc in running:
                proc.kill()
                proc.wait()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert home.prun("ping").stdout.startswith(f"pong: daemon {pid} ")  # the same daemon, serving again
    assert [row["name"] for row in home.ls()] == ["napper"]


def test_a_long_command_is_not_cut_while_the_daemon_works_and_has_a_cap(home: Home) -> None:
    """Stopping an app that ignores SIGTERM takes its graceful timeout (7 s): longer than the client waits for a
    silent daemon (5 s), shorter than the command's cap."""
    start_stubborn(home, graceful=7)
    with socket.socket(socket.AF_UNIX) as sock:  # the protocol: progress lines for the request, then its result
        sock.settimeout(30)
        sock.connect(os.path.join(home.path, "rpc.sock"))
        sock.sendall(b'{"id": 7, "command": "restart", "args": {"target": "stubborn"}}\n')
        replies = []
        for line in sock.makefile("rb"):
            replies.append(json.loads(line))
            if "progress" not in replies[-1]:
                break
    *progress, result = replies
    assert len(progress) >= 5 and all(p == {"id": 7, "progress": "working"} for p in progress), replies
    assert result["id"] == 7 and result["result"][0]["status"] == "online", result
    stubborn_started(home, 2)
    client = Client(home.path, timeout=3)  # a cap shorter than the stop: the client stops waiting, not the daemon
    began = time.monotonic()
    with pytest.raises(ClientError) as overdue:
        client.stop("stubborn")
    assert 3 <= time.monotonic() - began < 6
    assert overdue.value.code_name == "TIMEOUT"
    assert str(overdue.value) == (f"the prun daemon (pid {home.daemon_pid()}) is still working on stop after 3 s; "
                                  f"stopped waiting (prun ls shows how it ends)")
    wait_until(lambda: home.app("stubborn")["status"] == "stopped", what="the stop to end in the daemon")
    home.prun("restart", "stubborn")
    stubborn_started(home, 3)
    began = time.monotonic()
    assert "stopped" in home.prun("stop", "stubborn").stdout  # the CLI, whose silence limit is 5 s
    assert time.monotonic() - began > 6
