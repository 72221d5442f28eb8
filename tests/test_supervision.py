"""What a worker leaves behind: children the app started, and memory it leaks (real processes)."""

from __future__ import annotations

import os
import shutil
import signal
import socket

import psutil

from tests.support import APPS, echo, wait_until


def _start(port: int, command: bytes) -> tuple[int, int]:
    """Ask the forks app to start a child: (its pid, the pid of the worker that started it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(command + b"\n")
        child, worker = sock.makefile("rb").readline().split()
        return int(child), int(worker)


def _ask(port: int, command: bytes) -> int:
    return _start(port, command)[0]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _port_free(port: int) -> bool:
    """Free to listen on, as a new prun would (SO_REUSEADDR: connections left in CLOSE_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
        return True


def test_after_the_master_is_killed_no_child_of_the_app_keeps_the_port(prun):
    master = prun("forks:handle", "-b", "127.0.0.1:0", "--balance", "shared")
    port = master.wait_ready()
    children = [_ask(port, b"fork"), _ask(port, b"spawn")]
    try:
        os.kill(master.pid, signal.SIGKILL)
        master.proc.wait(5)  # (its output pipe stays open: the children hold it)
        wait_until(lambda: _port_free(port), what=f"port {port} to be free again")
    finally:
        _kill(children)


def test_a_graceful_stop_ends_the_children_the_app_started(prun):
    master = prun("forks:handle", "-i", "2", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    children = [_ask(port, b"fork"), _ask(port, b"spawn"), _ask(port, b"stubborn")]
    try:
        master.signal(signal.SIGTERM)
        assert master.wait_exit(15) == 0
        for pid in children:
            assert _gone(pid), f"child {pid} of a worker outlived prun"
        master.wait_for(rf"process {children[1]} \(python\S*\) was left behind by a worker: stopping it")
    finally:
        _kill(children)


def test_children_of_a_replaced_worker_are_stopped_after_it_exits(prun):
    master = prun("forks:handle", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    children = [_ask(port, b"spawn"), _ask(port, b"stubborn")]
    try:
        master.reload("reload complete")
        wait_until(lambda: all(_gone(pid) for pid in children), what="the old worker's children to end")
        assert master.proc.poll() is None
    finally:
        _kill(children)


def test_a_helper_double_forked_by_a_serving_worker_is_left_alone_until_that_worker_is_gone(prun):
    master = prun("forks:handle", "-i", "2", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    helper, owner = _start(port, b"helper")  # its shell exited: the master adopted it at once
    started = [helper]
    try:
        while True:  # a child of the other worker
            child, worker = _start(port, b"spawn")
            started.append(child)
            if worker != owner:
                break
        mark = master.mark()
        os.kill(worker, signal.SIGKILL)
        master.wait_for(rf"process {child} \(python\S*\) was left behind by a worker: stopping it", start=mark)
        assert not _gone(helper), "the helper of a worker that still serves was stopped"
        os.kill(owner, signal.SIGKILL)
        master.wait_for(rf"process {helper} \(python\S*\) was left behind by a worker: stopping it", start=mark)
        wait_until(lambda: _gone(helper), what="the helper to end")
    finally:
        _kill(started)


def test_a_worker_whose_memory_doubles_is_named_in_the_log(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--timeout", "2")  # a heartbeat each 0.5 s
    port = master.wait_ready()
    mark = master.mark()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"grow 100\n")
        assert sock.makefile("rb").readline() == b"grown\n"
    line = master.wait_for(r"worker 0 \(pid \d+, gen 1\) grew to (\d+) MB of memory "
                           r"\((\d+\.\d)x the (\d+) MB it had when ready\)", start=mark)
    grown, ratio, ready = int(line.group(1)), float(line.group(2)), int(line.group(3))
    assert grown >= ready + 100 and ratio >= 2.0


def test_a_first_worker_that_dies_while_the_others_still_boot_is_restarted(prun, tmp_path):
    shutil.copy(APPS / "tcp.py", tmp_path / "tcp.py")
    (tmp_path / "service.py").write_text(
        "import os, time\n"
        "from tcp import handle\n"
        "try:\n"
        "    os.close(os.open('first', os.O_CREAT | os.O_EXCL))\n"
        "except FileExistsError:\n"
        "    time.sleep(3)  # every worker but the first boots slowly\n")
    master = prun("service:handle", "-i", "2", "-b", "127.0.0.1:0", cwd=tmp_path)
    first = int(master.wait_for(r"worker \d \(pid (\d+), gen 1\) ready").group(1))
    os.kill(first, signal.SIGKILL)
    master.wait_for(rf"pid {first}, gen 1\) was killed by SIGKILL; restarting it")
    port = master.wait_ready()
    wait_until(lambda: len(master.workers()) == 2 and first not in master.workers(), what="2 workers again")
    assert echo(port) == b"ping\n"
