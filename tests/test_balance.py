"""leastconn balancing: the master hands connections to the least-loaded ready worker, losing none."""

from __future__ import annotations

import os
import signal
import socket

from tests.support import EchoLoad, echo, wait_until


def _pid_of(sock: socket.socket) -> int:
    sock.sendall(b"pid\n")
    return int(sock.makefile("rb").readline())


def test_connections_go_to_the_worker_with_fewest_open(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--balance", "leastconn")
    port = master.wait_ready()
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
        mark = master.mark()
        os.kill(stopped, signal.SIGKILL)
        master.wait_for(r"exited with \d+ connections it had not taken yet; handing them to other workers",
                        start=mark)
        for i, c in enumerate(clients):
            assert c.makefile("rb").readline() == f"hello {i}\n".encode()
    finally:
        for c in clients:
            c.close()
