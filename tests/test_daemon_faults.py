"""The daemon under faults, with real processes: a master killed just before a command, a dead log writer, a
full log disk, a spawn that fails, a killed fork-mode supervisor. No command may hang; apps keep serving."""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.daemon_support import Home, HttpLoad, free_port, get
from tests.support import APPS, wait_until

HTTP_APP = ("greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0")


def describe(home: Home, name: str) -> dict[str, str]:
    """`prun describe NAME` as a dict of its fields."""
    fields = {}
    for line in home.prun("describe", name).stdout.splitlines()[1:]:
        key, _, value = line.strip().partition("  ")
        fields[key.strip()] = value.strip()
    return fields


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def say(port: int, text: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/say?{text}")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("command", ["restart", "stop"])
def test_a_command_right_after_a_master_crash_answers(home: Home, command: str) -> None:
    """A worker's child keeps the log pipes open; the master is SIGKILLed and the command comes at once."""
    home.prun("start", *HTTP_APP, "--name", "api")
    port = home.port("api")
    child = int(get(port, "/child"))
    master = home.app("api")["pid"]
    os.kill(master, signal.SIGKILL)
    began = time.monotonic()
    result = home.prun(command, "api", timeout=60)
    assert time.monotonic() - began < 30, result
    assert home.prun("ls", timeout=10).returncode == 0  # the daemon's loop is free
    row = home.app("api")
    if command == "restart":
        assert row["status"] == "online" and row["pid"] not in (None, master)
        assert get(port).startswith("hello ")
    else:
        assert row["status"] == "stopped" and row["pid"] is None
    wait_until(lambda: not alive(child), what="the worker's child to go with its master's session")


def test_a_killed_log_writer_is_replaced_and_no_request_fails(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api", "-i", "2")
    port = home.port("api")
    writer = int(describe(home, "api")["log writer pid"])
    assert say(port, "before") == 200
    os.kill(writer, signal.SIGKILL)
    statuses = [say(port, f"after-{n}") for n in range(200)]  # the pipes never break: the daemon holds them
    assert statuses == [200] * 200
    new = wait_until(lambda: (lambda p: p != str(writer) and p)(describe(home, "api").get("log writer pid")),
                     what="a new log writer")
    out_log = Path(home.path, "logs", "api-out.log")
    wait_until(lambda: "said after-199" in out_log.read_text(), what="the lines to reach the file")
    text = out_log.read_text()
    assert all(f"said after-{n}\n" in text for n in range(200))  # none lost
    err_log = Path(home.path, "logs", "api-err.log").read_text()
    assert f"the log writer (pid {writer}) died killed by SIGKILL; pid {new} took over its pipes" in err_log
    home.prun("reload", "api", timeout=120)  # new workers print at import: they boot
    assert home.app("api")["status"] == "online"


def test_the_log_writer_is_not_what_pkill_prun_logs_matches(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api")
    writer = int(describe(home, "api")["log writer pid"])
    assert "prun logs" not in " ".join(psutil.Process(writer).cmdline())


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A 1 MiB tmpfs, filled to the last byte."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="prun-full-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def fill(path: Path) -> None:
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"x" * size)
            except OSError:
                continue
    finally:
        os.close(fd)


def test_a_full_log_disk_changes_no_command(home: Home, full_disk: Path) -> None:
    home.prun("start", *HTTP_APP, "--name", "api", "-i", "2", "--log-file", str(full_disk / "api.log"))
    port = home.port("api")
    fill(full_disk)
    for n in range(200):  # past the room left in the log files' last pages: their lines are lost from here on
        assert say(port, f"into-a-full-disk-{n}-{'x' * 60}") == 200
    with HttpLoad(port) as load:
        load.wait_requests(20)
        home.prun("reload", "api", timeout=120)
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]
    home.prun("restart", "api", timeout=120)
    assert home.app("api")["status"] == "online" and get(port).startswith("hello ")
    home.prun("stop", "api", timeout=120)
    assert home.app("api")["status"] == "stopped"


def test_a_master_that_cannot_be_started_again_is_retried_until_it_can(home: Home, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(APPS / "greeter.py", app_dir / "greeter.py")
    home.prun("start", *HTTP_APP, "--name", "api", cwd=app_dir)
    master = home.app("api")["pid"]
    moved = tmp_path / "moved"
    app_dir.rename(moved)  # the directory is gone for a while: the next master cannot start
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: "cannot restart" in home.app("api")["error"], what="a failed restart")
    failed = home.app("api")
    assert failed["status"] == "launching" and failed["pid"] is None  # again and again, with backoff
    wait_until(lambda: home.app("api")["restarts"] > failed["restarts"], what="another try, with backoff")
    moved.rename(app_dir)
    row = wait_until(lambda: (lambda r: r["status"] == "online" and r)(home.app("api")), timeout=60,
                     what="the app online again")
    assert get(int(row["listen"][0].rsplit(":", 1)[1])).startswith("hello ")


def test_a_spawn_that_hits_emfile_recovers_when_fds_are_back(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api")
    port = home.port("api")
    daemon = home.daemon_pid()
    assert daemon
    master = home.app("api")["pid"]
    log = Path(home.path, "daemon.log")
    limits = resource.prlimit(daemon, resource.RLIMIT_NOFILE)
    try:
        resource.prlimit(daemon, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{daemon}/fd")), limits[1]))
        os.kill(master, signal.SIGKILL)
        wait_until(lambda: "Too many open files" in log.read_text(), what="a spawn that hits EMFILE")
    finally:
        resource.prlimit(daemon, resource.RLIMIT_NOFILE, limits)
    row = wait_until(lambda: (lambda r: r["status"] == "online" and r)(home.app("api")), timeout=60,
                     what="the app online again")
    assert row["pid"] != master and get(port).startswith("hello ")


def instances(home: Home, command: str) -> list[psutil.Process]:
    found = []
    for proc in home.ours():
        try:
            if proc.cmdline() == command.split():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_a_killed_fork_supervisor_leaves_no_instance_behind(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "napper", "-i", "2")
    supervisor = home.app("napper")["pid"]
    first = {p.pid for p in instances(home, "sleep 1000")}
    assert len(first) == 2
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: (lambda r: r["status"] == "online" and r["pid"] != supervisor)(home.app("napper")),
               what="a new supervisor")
    wait_until(lambda: not any(alive(pid) for pid in first), what="the old instances to be gone")
    now = instances(home, "sleep 1000")
    assert len(now) == 2 and not {p.pid for p in now} & first
    home.prun("stop", "napper")
    wait_until(lambda: not instances(home, "sleep 1000"), what="every instance to stop")


def test_a_shell_app_is_stopped_with_its_whole_tree(home: Home) -> None:
    home.prun("start", "sh -c 'sleep 777; echo done'", "--name", "shell")
    wait_until(lambda: instances(home, "sleep 777"), what="the shell's sleep")
    home.prun("stop", "shell")
    assert not instances(home, "sleep 777")
    home.prun("start", "sh -c 'sleep 778; echo done'", "--name", "shell2")
    wait_until(lambda: instances(home, "sleep 778"), what="the shell's sleep")
    home.prun("kill")
    assert not instances(home, "sleep 778")


def test_a_stopped_master_holds_up_only_its_own_reload(home: Home) -> None:
    """A SIGSTOPped master: its reload waits (the daemon's loop does not), and runs once it continues."""
    home.prun("start", *HTTP_APP, "--name", "api")
    master = home.app("api")["pid"]
    os.kill(master, signal.SIGSTOP)
    try:
        done: list[subprocess.CompletedProcess[str]] = []
        thread = threading.Thread(target=lambda: done.append(home.prun("reload", "api", check=False, timeout=300)))
        thread.start()
        began = time.monotonic()
        while thread.is_alive() and time.monotonic() - began < 5:
            assert home.prun("ls", timeout=10).returncode == 0
            thread.join(0.5)
        os.kill(master, signal.SIGCONT)  # the reload it was asked then runs
        thread.join(120)
        assert done and done[0].returncode == 0, done
    finally:
        os.kill(master, signal.SIGCONT)


def test_a_reload_is_answered_by_its_own_outcome_not_by_another_one(home: Home) -> None:
    """A HUP starts a reload; `prun reload` asked meanwhile returns once its own (the next) one is done."""
    home.prun("start", *HTTP_APP, "--name", "api", "--env", "SLOW_BOOT=1")
    master = home.app("api")["pid"]
    err_log = Path(home.path, "logs", "api-err.log")
    os.kill(master, signal.SIGHUP)
    wait_until(lambda: "reloading: gen 1 -> gen 2" in err_log.read_text(), what="the HUP's reload to begin")
    wait_until(lambda: home.app("api")["status"] == "reloading", what="the app shown reloading")
    home.prun("reload", "api", timeout=120)
    from prun.cluster.client import Client

    generations = {w["generation"] for w in Client(home.path, autostart=False).describe("api")[0]["worker_list"]}
    assert generations == {3}, generations
    assert home.app("api")["restarts"] == 2 and home.app("api")["status"] == "online"


def ask_child(port: int, command: str) -> int:
    """The forks app's answer to `command`: the pid of the child its worker started."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{command}\n".encode())
        return int(sock.makefile().readline().split()[0])


def test_what_a_killed_master_left_is_stopped_with_the_app_and_its_port_is_free(home: Home) -> None:
    port = free_port()
    home.prun("start", "forks:handle", "--name", "forks", "-b", f"127.0.0.1:{port}")
    children = [ask_child(port, command) for command in ("fork", "spawn", "stubborn", "helper", "daemon")]
    assert all(alive(pid) for pid in children)
    os.kill(home.app("forks")["pid"], signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in children), what="the app's children to go with its master")
    home.prun("stop", "forks")
    import socket

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    home.prun("delete", "forks")
    home.prun("start", "forks:handle", "--name", "again", "-b", f"127.0.0.1:{port}")  # the port is free
    assert alive(ask_child(port, "spawn"))


def test_a_stop_ends_a_child_that_left_the_apps_session(home: Home) -> None:
    home.prun("start", "forks:handle", "--name", "forks", "-b", "127.0.0.1:0")
    port = home.port("forks")
    escaped = ask_child(port, "daemon")  # forked, then setsid: in no process group of the app's
    wait_until(lambda: os.getsid(escaped) == escaped, what="the child to leave the session")
    home.prun("stop", "forks")
    assert not alive(escaped)
