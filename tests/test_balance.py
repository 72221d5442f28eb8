"""leastconn balancing: the master hands connections to the least-loaded ready worker, losing none."""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import time
import urllib.request

import psutil
import pytest

from prun.runtime.server import WIDE_HANDLES
from tests.support import EchoLoad, echo, wait_until


def _listener(port: int) -> list[str]:
    """The /proc/net/tcp fields of the one IPv4 listener on `port`."""
    with open("/proc/net/tcp") as table:
        rows = [row.split() for row in table.readlines()[1:]]
    found = [fields for fields in rows if fields[1].endswith(f":{port:04X}") and fields[3] == "0A"]  # 0A: LISTEN
    assert len(found) == 1, f"{len(found)} listeners on port {port}"
    return found[0]


def _accept_queue(port: int) -> int:
    """Connections waiting in the kernel's accept queue of the IPv4 listener on `port`."""
    return int(_listener(port)[4].split(":")[1], 16)  # rx_queue: the accept backlog


def _listener_fds(pid: int, port: int) -> int:
    """The fds of process `pid` open on the IPv4 listener on `port`."""
    target = f"socket:[{_listener(port)[9]}]"  # its inode
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == target
        except OSError:
            pass  # closed meanwhile
    return count


def _polls_listener(pid: int, port: int) -> bool:
    """Whether process `pid` has the IPv4 listener on `port` in an epoll set (it accepts on it itself)."""
    target = f"socket:[{_listener(port)[9]}]"
    mine, polls = set(), []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link == target:
            mine.add(fd)
        elif link == "anon_inode:[eventpoll]":
            polls.append(fd)
    for fd in polls:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                if any(line.startswith("tfd:") and line.split()[1] in mine for line in info):
                    return True
        except OSError:
            pass
    return False


def _open_connections(health: int) -> list[int]:
    """What the master counts open on each worker (from their heartbeats), as its /status shows."""
    with urllib.request.urlopen(f"http://127.0.0.1:{health}/status", timeout=5) as reply:
        return [w["connections"] for w in json.loads(reply.read())["workers"]]


def _pid_of(sock: socket.socket) -> int:
    sock.sendall(b"pid\n")
    return int(sock.makefile("rb").readline())


def test_connections_go_to_the_worker_with_fewest_open(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--balance", "leastconn", "--log-level", "debug")
    port = master.wait_ready()
    master.wait_for(r"balance: master hands off to 2 workers")  # the first worker no longer accepts alone
    # ... once it has done as told (it accepted alone until then, and a connection it took would not count
    # for the master until its next report): no worker polls the listener.
    workers = list(master.workers())
    wait_until(lambda: not any(_polls_listener(pid, port) for pid in workers), what="the workers to stop accepting")
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
    try:
        owners = [_pid_of(s) for s in held]
        assert sorted(owners.count(p) for p in set(owners)) == [3, 3]
        # close three connections of one worker: the next three go to it
        lighter = owners[0]
        for s, owner in list(zip(held, owners)):
            if owner == lighter:
                s.close()
                held.remove(s)

        def lands_on_lighter() -> bool:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if _pid_of(s) == lighter:
                held.append(s)
                return True
            s.close()
            return False

        # once the master has heard of the three closes, new connections go to the emptier worker
        wait_until(lands_on_lighter, what="a connection on the emptier worker")
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(s)
            assert _pid_of(s) == lighter  # 1 and 2 open there against 3 on the other
    finally:
        for s in held:
            s.close()


def test_no_connection_goes_to_a_draining_worker_and_reload_loses_nothing(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--balance", "leastconn",
                  "--graceful-timeout", "10")
    port = master.wait_ready()
    lingering = socket.create_connection(("127.0.0.1", port), timeout=5)
    old_owner = _pid_of(lingering)  # keeps its old worker draining during the reload
    with EchoLoad(port, clients=6, per_connection=20) as load:
        load.wait_requests(100)
        for n in range(2, 5):
            mark = master.mark()
            master.signal(signal.SIGHUP)
            master.wait_for(rf"worker 1 \(pid \d+, gen {n}\) ready", start=mark, timeout=20)
            if n == 2:
                # old_owner is now draining (or gone): every new connection lands elsewhere
                for _ in range(10):
                    assert echo(port, b"pid\n") != str(old_owner).encode() + b"\n"
                lingering.close()
            master.wait_for(rf"reload complete: 2 workers on gen {n}", start=mark, timeout=20)
            load.wait_requests(50)
    assert load.failed == 0, load.errors[:5]


def test_reloads_under_connection_per_request_load_lose_nothing(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--balance", "leastconn")
    port = master.wait_ready()
    with EchoLoad(port, clients=8, per_connection=1) as load:
        load.wait_requests(100)
        for n in range(2, 12):
            master.reload(rf"reload complete: 2 workers on gen {n}")
            load.wait_requests(30)
    assert load.failed == 0, load.errors[:5]


def test_a_worker_killed_with_queued_connections_loses_none(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--balance", "leastconn", "--timeout", "0")
    port = master.wait_ready()
    workers = list(wait_until(lambda: len(master.workers()) == 2 and master.workers()))
    stopped = workers[0]
    os.kill(stopped, signal.SIGSTOP)  # it stops reading its channel: hand-offs queue up there
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    try:
        for i, c in enumerate(clients):
            c.sendall(f"hello {i}\n".encode())
        wait_until(lambda: _accept_queue(port) == 0, what="the master to accept (and hand off) all 8")
        mark = master.mark()
        os.kill(stopped, signal.SIGKILL)
        master.wait_for(r"exited with \d+ connections it had not taken yet; handing them to other workers",
                        start=mark)
        for i, c in enumerate(clients):
            assert c.makefile("rb").readline() == f"hello {i}\n".encode()
    finally:
        for c in clients:
            c.close()


def _answers(port: int, count: int, timeout: float) -> int:
    """Open `count` connections at once, send a line on each; how many got it back within `timeout` s."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    try:
        with selectors.DefaultSelector() as sel:
            for i, s in enumerate(socks):
                s.sendall(f"burst {i}\n".encode())
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, i)
            answered = 0
            deadline = time.monotonic() + timeout
            while answered < count and time.monotonic() < deadline:
                for key, _ in sel.select(deadline - time.monotonic()):
                    sel.unregister(key.fileobj)
                    if key.fileobj.recv(100) == f"burst {key.data}\n".encode():  # type: ignore[union-attr]
                        answered += 1
            return answered
    finally:
        for s in socks:
            s.close()


def test_a_burst_queued_while_the_only_worker_stalls_is_served_as_soon_as_it_is_back(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--balance", "leastconn")
    port = master.wait_ready()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as staller:
        staller.sendall(b"block 0.5\n")  # the worker's loop stops for 0.5 s: its channel fills up
        assert _answers(port, 1000, timeout=15) == 1000
        assert staller.makefile("rb").readline() == b"blocked\n"


def _few_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # for this prun (and its workers) only


def test_out_of_fds_the_master_pauses_accepting_instead_of_spinning_and_releases_every_fd(prun):
    # Two workers: a lone one would accept on the listeners itself, and the master would accept nothing.
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--balance", "leastconn", preexec_fn=_few_fds)
    port = master.wait_ready()
    workers = list(wait_until(lambda: len(master.workers()) == 2 and master.workers()))
    proc = psutil.Process(master.pid)
    baseline = proc.num_fds()
    for _ in range(2):
        mark = master.mark()
        for worker in workers:
            os.kill(worker, signal.SIGSTOP)  # while its workers are stopped, the master holds every connection
        try:
            clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(150)]
            master.wait_for(r"accept failed: Too many open files; pausing accepting", start=mark)
            cpu = proc.cpu_times()
            time.sleep(0.5)  # measuring: what the master burns while it cannot accept
            burnt = sum(proc.cpu_times()[:2]) - sum(cpu[:2])
            assert burnt < 0.25, f"the master used {burnt:.2f}s of CPU in 0.5s out of fds"
        finally:
            for worker in workers:
                os.kill(worker, signal.SIGCONT)
        for c in clients:  # each is served or closed (its fd dropped by a worker out of fds), none hangs
            try:
                c.sendall(b"ping\n")
                assert c.makefile("rb").readline() in (b"ping\n", b"")
            except (ConnectionResetError, BrokenPipeError):
                pass
            c.close()
        wait_until(lambda: proc.num_fds() <= baseline, what=f"the master back to {baseline} fds")
        assert echo(port) == b"ping\n"
        master.wait_for(r"accepting again after", start=mark)


def test_a_stopped_worker_gets_few_connections_and_those_are_served_once_the_watchdog_kills_it(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--balance", "leastconn", "--timeout", "5")
    port = master.wait_ready()
    held: dict[int, list[socket.socket]] = {}
    while len(held) < 2 or max(len(v) for v in held.values()) < 5:  # five idle connections on one worker
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.setdefault(_pid_of(s), []).append(s)
    busy = max(held, key=lambda pid: len(held[pid]))
    (stopped,) = set(held) - {busy}
    for s in held.pop(stopped):
        s.close()
    wait_until(lambda: echo(port, b"pid\n") == f"{stopped}\n".encode(), what="the master to count the closes")
    mark = master.mark()
    os.kill(stopped, signal.SIGSTOP)  # hung, as far as anyone can tell: it reads nothing, sends nothing
    stuck: list[socket.socket] = []

    def served_by_the_other() -> bool:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            s.sendall(b"ping\n")
            try:
                assert s.recv(100) == b"ping\n"
            except TimeoutError:
                stuck.append(s)  # handed to the stopped one: it has to wait for the watchdog
                return False
            s.close()
        return True

    try:
        # Less loaded as it looks, the stopped worker holds its hand-offs: it soon gets no more.
        wait_until(served_by_the_other, timeout=4, what="connections served by the other worker")
        assert psutil.Process(stopped).status() == psutil.STATUS_STOPPED
        assert 1 <= len(stuck) <= 3, f"{len(stuck)} connections went to a stopped worker"
        master.wait_for(rf"pid {stopped}, gen 1\) sent no heartbeat for 5s", start=mark)
        master.wait_for(rf"pid {stopped}, gen 1\) exited with \d+ connections it had not taken yet", start=mark)
        for s in stuck:  # re-handed, and served
            s.settimeout(10)
            assert s.recv(100) == b"ping\n"
    finally:
        for s in stuck + held[busy]:
            s.close()


BOTH_ACCEPT = r"balance: (master hands off to 2 workers|2 workers accept directly)"


def _served_while_the_master_is_stopped(master, port: int, count: int = 10) -> set[int]:  # type: ignore[no-untyped-def]
    """The pids that answer `count` new connections while the master is SIGSTOPped (it accepts none)."""
    os.kill(master.pid, signal.SIGSTOP)
    try:
        return {int(echo(port, b"pid\n", timeout=10)) for _ in range(count)}
    finally:
        os.kill(master.pid, signal.SIGCONT)


def test_a_lone_worker_accepts_its_own_connections(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--log-level", "debug")  # leastconn, the default, with one worker
    port = master.wait_ready()
    (worker,) = wait_until(lambda: len(master.workers()) == 1 and master.workers())
    master.wait_for(rf"balance: worker 0 \(pid {worker}, gen 1\) accepts alone")
    assert _served_while_the_master_is_stopped(master, port) == {worker}


def test_a_busy_worker_under_fast_new_connections_accepts_several_per_turn_and_one_again_after(prun):
    # libuv accepts one connection per turn of the loop: a worker kept busy by new connections serves
    # its listener through several fds, one accept each per turn, then through one again.
    master = prun("tcp:busy", "-b", "127.0.0.1:0", "--log-level", "debug", "--graceful-timeout", "10")
    port = master.wait_ready()
    (worker,) = wait_until(lambda: len(master.workers()) == 1 and master.workers())
    master.wait_for(rf"balance: worker 0 \(pid {worker}, gen 1\) accepts alone")
    wait_until(lambda: _listener_fds(worker, port) == 2, what="the master's fd and the one served")
    with EchoLoad(port, clients=8, per_connection=1) as load:
        wait_until(lambda: _listener_fds(worker, port) == 1 + WIDE_HANDLES, timeout=30, what="a widened listener")
        load.wait_requests(500)  # served through the wide listener
        # A reload drains the wide worker: it closes every fd it accepted on, and nothing is lost.
        master.reload()
        wait_until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE,
                   timeout=20, what="the old worker's exit")
        (successor,) = wait_until(lambda: len(master.workers()) == 1 and master.workers())
        load.wait_requests(200)
    wait_until(lambda: _listener_fds(successor, port) == 2, timeout=10, what="one fd again once the load ended")
    assert load.failed == 0, load.errors[:5]
    assert echo(port) == b"ping\n"


@pytest.mark.parametrize("per_connection", [1, 50], ids=["connection-per-request", "keep-alive"])
def test_hups_with_one_worker_lose_nothing_and_the_new_worker_accepts_alone(prun, per_connection):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--log-level", "debug", "--graceful-timeout", "10")
    port = master.wait_ready()
    with EchoLoad(port, clients=8, per_connection=per_connection) as load:
        load.wait_requests(100)
        for n in range(2, 7):
            mark = master.mark()
            master.signal(signal.SIGHUP)
            # The master hands off to both generations, or, if the load opens connections fast enough
            # (DIRECT_ABOVE), both accept themselves.
            master.wait_for(BOTH_ACCEPT, start=mark, timeout=20)
            master.wait_for(rf"reload complete: 1 worker on gen {n}", start=mark, timeout=30)
            lone = int(master.wait_for(rf"balance: worker 0 \(pid (\d+), gen {n}\) accepts alone", start=mark).group(1))
            load.wait_requests(50)
    assert load.failed == 0, load.errors[:5]
    assert _served_while_the_master_is_stopped(master, port) == {lone}


def test_scaling_from_one_worker_to_two_and_back_switches_who_accepts_and_loses_nothing(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--log-level", "debug", "--graceful-timeout", "10")
    port = master.wait_ready()
    master.wait_for(r"accepts alone")
    with EchoLoad(port, clients=8, per_connection=5) as load:
        load.wait_requests(100)
        mark = master.mark()
        master.signal(signal.SIGTTIN)
        master.wait_for("scaled up to 2 workers", start=mark)
        master.wait_for(BOTH_ACCEPT, start=mark)
        both = wait_until(lambda: len(master.workers()) == 2 and set(master.workers()), what="2 workers")
        seen: set[int] = set()
        wait_until(lambda: seen.add(int(echo(port, b"pid\n"))) or seen == both, what="connections on both workers")
        load.wait_requests(100)
        mark = master.mark()
        master.signal(signal.SIGTTOU)
        master.wait_for("scaled down to 1 worker", start=mark)
        lone = int(master.wait_for(r"balance: worker \d \(pid (\d+), gen 1\) accepts alone", start=mark).group(1))
        wait_until(lambda: set(master.workers()) == {lone}, what="the other worker gone")
        load.wait_requests(100)
    assert load.failed == 0, load.errors[:5]
    assert _served_while_the_master_is_stopped(master, port) == {lone}


def test_fast_new_connections_are_accepted_by_the_workers_themselves_and_slow_ones_handed_off_again(prun):
    # Past about a thousand new connections a second, a hand-off costs more than it balances: the workers
    # accept on the listeners themselves, as in shared mode, until the rate falls again.
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--log-level", "debug", "--balance", "leastconn",
                  "--health", "127.0.0.1:0")
    port = master.wait_ready()
    health = int(master.wait_for(r"health endpoint on http://\S+:(\d+)/").group(1))
    master.wait_for(r"balance: master hands off to 2 workers")
    workers = set(wait_until(lambda: len(master.workers()) == 2 and master.workers()))
    mark = master.mark()
    with EchoLoad(port, clients=8, per_connection=1) as load:
        master.wait_for(r"balance: 2 workers accept directly \(\d+ new connections/s\)", start=mark, timeout=30)
        served = _served_while_the_master_is_stopped(master, port)  # the master accepts nothing now
        assert served and served <= workers
        load.wait_requests(200)
    master.wait_for(r"balance: master hands off to 2 workers", start=mark, timeout=10)  # the load is over
    assert load.failed == 0, load.errors[:5]
    # The workers have stopped accepting, and the master has heard from each that the load's connections
    # are closed (their heartbeats): otherwise its count of what each one holds is not yet theirs.
    wait_until(lambda: not any(_polls_listener(pid, port) for pid in workers), what="the workers to stop accepting")
    wait_until(lambda: _open_connections(health) == [0, 0], timeout=10, what="both workers reporting none open")
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
    try:  # handed off again: each new connection to the worker with the fewest
        owners = [_pid_of(s) for s in held]
        assert sorted(owners.count(p) for p in workers) == [3, 3]
    finally:
        for s in held:
            s.close()


def test_a_worker_killed_while_workers_accept_directly_is_replaced_and_its_successor_accepts_directly(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--log-level", "debug", "--balance", "leastconn")
    port = master.wait_ready()
    mark = master.mark()
    with EchoLoad(port, clients=8, per_connection=1) as load:
        master.wait_for(r"balance: 2 workers accept directly", start=mark, timeout=30)
        victim = next(iter(master.workers()))
        killed = master.mark()
        os.kill(victim, signal.SIGKILL)  # in the middle of the load: its open connections die with it
        master.wait_for(rf"pid {victim}, gen 1\) was killed by SIGKILL; restarting it", start=killed)
        successor = int(master.wait_for(r"worker \d \(pid (\d+), gen 1\) ready", start=killed, timeout=20).group(1))
        master.wait_for(r"balance: 2 workers accept directly", start=killed)  # the successor joins at once
        load.wait_requests(200)
        # The master and the other worker accept nothing while stopped: the successor was told to accept
        # itself, and does. (With the other worker running, which of the two takes each connection is
        # the kernel's choice, and a busy worker accepting up to 8 per turn may take all of a few.)
        others = [pid for pid in master.workers() if pid != successor]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            served = _served_while_the_master_is_stopped(master, port, count=5)
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
        assert served == {successor}
        failed_at_kill = load.failed
        load.wait_requests(200)
    assert load.failed == failed_at_kill, load.errors[-5:]  # nothing fails once the replacement serves
