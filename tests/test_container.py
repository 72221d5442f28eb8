"""Container and service-manager mode: PID 1, exit statuses, health probes, sd_notify, socket activation, JSON logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.support import echo, wait_until


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_pid_namespace = pytest.mark.skipif(not _unshare_works(),
                                         reason="creating a PID namespace (unshare --pid) is not permitted here")
PID1 = ["unshare", "--pid", "--fork", "--mount-proc"]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@needs_pid_namespace
def test_pid1_reaps_orphans_and_drains_on_term_with_exit_0(prun):
    master = prun("lifecycle:handle", "-i", "2", "-b", "127.0.0.1:0", env={"ORPHAN": "1"}, wrapper=PID1)
    port = master.wait_ready()
    master.wait_for(r"container mode \(PID 1\): reaping every child")
    pid1 = master.master_pid

    def zombies() -> list[int]:
        return [c.pid for c in psutil.Process(pid1).children() if c.status() == psutil.STATUS_ZOMBIE]

    # each worker left an orphan re-parented to prun; all have exited by now or will within 0.3 s
    wait_until(lambda: not zombies() and len(psutil.Process(pid1).children()) == 2, what="orphans reaped")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"sleep 1\n")
        time.sleep(0.2)
        master.signal(signal.SIGTERM)
        assert sock.makefile("rb").readline() == b"slept\n"
    assert master.wait_exit(15) == 0


@needs_pid_namespace
@pytest.mark.parametrize(("env", "status"), [({"EXIT_AT_IMPORT": "7"}, 7), ({"SIGNAL_AT_IMPORT": "9"}, 128 + 9)])
def test_pid1_passes_the_apps_exit_status_through(prun, env, status):
    master = prun("lifecycle:handle", "-b", "127.0.0.1:0", env=env, wrapper=PID1)
    assert master.wait_exit(15) == status


def test_health_endpoint_through_start_reload_and_drain(prun):
    master = prun("lifecycle:handle", "-i", "2", "-b", "127.0.0.1:0", "--health", "127.0.0.1:0",
                  env={"SLOW_IMPORT": "1.5"})
    health = int(master.wait_for(r"health endpoint on http://127\.0\.0\.1:(\d+)/readyz").group(1))
    assert _get(health, "/livez")[0] == 200
    assert _get(health, "/readyz")[0] == 503  # the workers are still importing
    port = master.wait_ready()
    assert _get(health, "/readyz") == (200, b"ready\n")
    assert _get(health, "/nope")[0] == 404
    status = json.loads(_get(health, "/status")[1])
    assert [w["state"] for w in status["workers"]] == ["ready", "ready"]
    assert {w["pid"] for w in status["workers"]} == set(master.workers())
    mark = master.mark()
    master.signal(signal.SIGHUP)
    master.wait_for("reloading:", start=mark)
    deadline = time.monotonic() + 30
    while "reload complete" not in master.output[-400:]:
        assert _get(health, "/readyz")[0] == 200  # every slot keeps a READY worker during a reload
        assert time.monotonic() < deadline, master.output
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"sleep 1.5\n")
        time.sleep(0.2)
        master.signal(signal.SIGTERM)
        master.wait_for("stopping: draining")
        assert _get(health, "/readyz")[0] == 503
        assert _get(health, "/livez")[0] == 200
        assert sock.makefile("rb").readline() == b"slept\n"
    assert master.wait_exit(15) == 0


def test_sd_notify_ready_reloading_stopping(prun, tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(20)
    try:
        master = prun("tcp:handle", "-b", "127.0.0.1:0", env={"NOTIFY_SOCKET": path})

        def message() -> dict[str, str]:
            return dict(line.split("=", 1) for line in listener.recv(4096).decode().splitlines())

        ready = message()
        assert ready["READY"] == "1" and ready["MAINPID"] == str(master.pid)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        master.signal(signal.SIGHUP)
        reloading = message()
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) >= before
        assert message()["READY"] == "1"
        assert not [w for w in master.workers().values() if "gen 1" in w]
        master.signal(signal.SIGTERM)
        assert message()["STOPPING"] == "1"
        assert master.wait_exit() == 0
    finally:
        listener.close()


def test_socket_activation_uses_the_passed_socket(prun):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    fd = sock.fileno()
    # systemd passes the sockets from fd 3 and sets LISTEN_PID to the service's own pid
    activate = (f"import os, sys; os.dup2({fd}, 3); os.close({fd}); os.environ['LISTEN_PID'] = str(os.getpid()); "
                "os.execvp(sys.argv[1], sys.argv[1:])")
    master = prun("tcp:handle", wrapper=[sys.executable, "-c", activate],
                  env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}, pass_fds=(fd,))
    sock.close()
    master.wrapped = False  # exec keeps the pid: the master is the process we started
    master.wait_for(rf"listening on 127\.0\.0\.1:{port}")
    master.wait_for("ready:")
    assert echo(port) == b"ping\n"
    assert master.output.count("listening on") == 1  # nothing else was bound


def test_json_logs_from_master_and_workers(prun):
    master = prun("lifecycle:handle", "-i", "2", "-b", "127.0.0.1:0", "--log-format", "json", "--name", "shop")
    master.wait_for(r'"message": "ready: 2 workers')
    wait_until(lambda: master.output.count("a line on stderr") == 2, what="both workers' stderr")
    records = [json.loads(line) for line in master.output.splitlines()]  # every line parses
    assert all(r["app"] == "shop" and "time" in r and "pid" in r and "stream" in r for r in records)
    workers = [r for r in records if r["worker"] is not None]
    assert {r["worker"] for r in workers} == {0, 1}
    assert {r["stream"] for r in workers} == {"stdout", "stderr"}
    assert any(r["message"] == f"app imported in pid {r['pid']}" for r in workers)
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_bind_to_an_inherited_fd(prun, balance):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    master = prun("tcp:handle", "-b", f"fd://{sock.fileno()}", "--balance", balance, pass_fds=(sock.fileno(),))
    sock.close()
    master.wait_for(rf"listening on 127\.0\.0\.1:{port}")
    master.wait_for("ready:")
    assert echo(port) == b"ping\n"
