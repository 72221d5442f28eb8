"""The master with real processes: instances, titles, supervision, signals, stopping."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import psutil
import pytest

from prun.cluster.options import cpu_count
from tests.support import EXAMPLES, echo, wait_until


def test_instances_max_starts_one_worker_per_cpu_with_titled_slots(prun):
    master = prun("tcp:handle", "-i", "max", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    workers = wait_until(lambda: len(master.workers()) == cpu_count() and master.workers(), what="workers")
    titles = sorted(workers.values())
    assert titles == [f"prun worker {i} tcp:handle gen 1" for i in range(cpu_count())]
    assert echo(port) == b"ping\n"
    assert " ".join(psutil.Process(master.pid).cmdline()).strip().startswith("prun master tcp:handle")


def test_worker_titles_name_the_app_by_its_name(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--name", "echo-api")
    master.wait_ready()
    workers = wait_until(lambda: len(master.workers()) == 2 and master.workers(), what="workers")
    assert sorted(workers.values()) == ["prun worker 0 echo-api gen 1", "prun worker 1 echo-api gen 1"]


def test_instances_minus_one_starts_one_fewer(prun):
    master = prun("tcp:handle", "-i", "-1", "-b", "127.0.0.1:0")
    master.wait_ready()
    expected = max(1, cpu_count() - 1)
    assert len(wait_until(lambda: len(master.workers()) == expected and master.workers())) == expected


def test_protocol_interface_and_example_echo(prun):
    master = prun("tcp:EchoProtocol", "-b", "127.0.0.1:0")
    assert echo(master.wait_ready(), b"over a protocol\n") == b"over a protocol\n"
    example = prun("echo:handle", "-b", "127.0.0.1:0", cwd=EXAMPLES)
    assert echo(example.wait_ready(), b"hey\n") == b"hey\n"


def test_killed_worker_is_replaced(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    before = wait_until(lambda: len(master.workers()) == 2 and master.workers())
    victim = next(iter(before))
    mark = master.mark()
    os.kill(victim, signal.SIGKILL)
    master.wait_for(rf"pid {victim}, gen 1\) was killed by SIGKILL; restarting it", start=mark)
    master.wait_for(r"ready", start=mark)
    after = wait_until(lambda: len(master.workers()) == 2 and master.workers())
    assert victim not in after
    assert echo(port) == b"ping\n"


def test_worker_blocking_its_loop_past_timeout_is_aborted_and_replaced(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--timeout", "1.5")
    port = master.wait_ready()
    (hung,) = wait_until(lambda: len(master.workers()) == 1 and master.workers())
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        mark = master.mark()
        sock.sendall(b"block 60\n")
        master.wait_for(rf"pid {hung}, gen 1\) sent no heartbeat for 1.5s", start=mark, timeout=15)
        master.wait_for(r"Current thread|File ", start=mark)  # faulthandler's stack of the hung worker
        master.wait_for(r"ready", start=mark)
    finally:
        sock.close()
    assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE
    assert echo(port) == b"ping\n"


def test_workers_die_with_a_killed_master(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0")
    master.wait_ready()
    workers = list(wait_until(lambda: len(master.workers()) == 2 and master.workers()))
    os.kill(master.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    master.wait_exit(5)
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in workers), timeout=5, what="workers to exit")
    assert time.monotonic() - killed_at < 2.0


def test_term_lets_a_slow_request_finish_then_exits_zero(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"sleep 1.5\n")
        time.sleep(0.2)  # let the request reach the worker before the stop
        master.signal(signal.SIGTERM)
        master.wait_for("stopping: draining 1 worker")
        assert sock.makefile("rb").readline() == b"slept\n"
    assert master.wait_exit(15) == 0


def test_second_int_stops_at_once(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--graceful-timeout", "60")
    port = master.wait_ready()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"sleep 30\n")
        time.sleep(0.2)
        master.signal(signal.SIGINT)
        master.wait_for("stopping: draining")
        started = time.monotonic()
        master.signal(signal.SIGINT)
        assert master.wait_exit(10) == 128 + signal.SIGINT
        assert time.monotonic() - started < 5


def test_ttin_and_ttou_scale_by_one(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0")
    master.wait_ready()
    master.signal(signal.SIGTTIN)
    master.wait_for("scaled up to 3 workers")
    wait_until(lambda: len(master.workers()) == 3, what="3 workers")
    for expected, workers in ((2, "2 workers"), (1, "1 worker")):
        master.signal(signal.SIGTTOU)
        master.wait_for(f"scaled down to {workers}$")
        wait_until(lambda expected=expected: len(master.workers()) == expected, what=f"{expected} workers")
    master.signal(signal.SIGTTOU)
    master.wait_for("already at 1 worker")
    assert len(master.workers()) == 1


def test_max_requests_recycles_a_worker_without_losing_connections(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--max-requests", "20")
    port = master.wait_ready()
    (first,) = wait_until(lambda: len(master.workers()) == 1 and master.workers())
    for _ in range(25):
        assert echo(port) == b"ping\n"
    master.wait_for(rf"pid {first}, gen 1\) served \d+ requests: replacing it")
    wait_until(lambda: master.workers() and first not in master.workers(), what="a new worker")
    assert echo(port) == b"ping\n"


def test_pid_file_holds_the_master_pid_and_is_removed(prun, tmp_path):
    pid_file = tmp_path / "prun.pid"
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--pid-file", str(pid_file))
    master.wait_ready()
    assert pid_file.read_text().strip() == str(master.pid)
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    assert not pid_file.exists()


def test_unix_socket_and_ipv6_binds(prun, tmp_path):
    path = tmp_path / "app.sock"
    master = prun("tcp:handle", "-b", f"unix:{path}", "-b", "[::1]:0")
    port = int(master.wait_for(r"listening on \[::1\]:(\d+)").group(1))
    master.wait_for("ready:")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(b"over unix\n")
        assert sock.makefile("rb").readline() == b"over unix\n"
    with socket.create_connection(("::1", port)) as sock:
        sock.sendall(b"over v6\n")
        assert sock.makefile("rb").readline() == b"over v6\n"
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    assert not path.exists()


def test_usr1_reopens_the_log_file_in_master_and_workers(prun, tmp_path):
    log = tmp_path / "prun.log"
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--log-file", str(log))
    port = int(wait_until(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()) if log.exists()
                          else None, what="the listening line in the log file").group(1))
    wait_until(lambda: "ready: 2 workers" in log.read_text(), what="ready in the log file")
    rotated = tmp_path / "prun.log.1"
    log.rename(rotated)
    master.signal(signal.SIGUSR1)
    wait_until(lambda: log.exists() and "reopened log file" in log.read_text(), what="a new log file")
    workers = set(master.workers())

    def say_from_each() -> set[int]:  # connect until both workers have printed a line
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"pid\n")
            reader = sock.makefile("rb")
            pid = int(reader.readline())
            sock.sendall(f"say after the rotation from {pid}\n".encode())
            assert reader.readline() == b"said\n"
            said.add(pid)
        return said == workers

    said: set[int] = set()
    wait_until(say_from_each, what="a line from each worker")
    wait_until(lambda: all(f"after the rotation from {pid}" in log.read_text() for pid in workers),
               what="each worker's line in the new file (relayed by the master)")
    assert "after the rotation" not in rotated.read_text()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read a listener's backlog")
@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_workers_keep_the_masters_listen_backlog(prun, balance):
    # leastconn: the lone worker accepts on the listener itself, so it calls listen() too
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--backlog", "777", "--balance", balance, "--log-level", "debug")
    port = master.wait_ready()
    if balance == "leastconn":
        master.wait_for("accepts alone")
    assert echo(port) == b"ping\n"
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert listing.split()[2] == "777", listing  # Send-Q of a listener is its backlog


def test_ttou_and_hup_during_start_up_wait_for_the_first_generation(prun):
    master = prun("lifecycle:handle", "-i", "2", "-b", "127.0.0.1:0", env={"SLOW_IMPORT": "1"})
    master.wait_for("listening on")
    master.signal(signal.SIGTTOU)  # while both workers still import the app, or even before they start
    master.signal(signal.SIGHUP)
    master.wait_for(r"ready: 2 workers")
    master.wait_for("scaled down to 1 worker")
    master.wait_for("reload complete: 1 worker on gen 2")
    assert master.proc.poll() is None
