"""Fuzzing a real prun worker: valid pipelines, randomly mutated, sent over TCP in random pieces.

Invariants: every connection is answered or closed (within seconds), answers are well-framed HTTP/1.1 and
never 5xx, the worker survives with no descriptor leaked, and a clean request succeeds afterwards.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http_wire import Request, parse_responses, requests, split
from tests.support import running, wait_until
from tests.test_http_properties import MUTATIONS, mutate
from tests.test_http_support import Client

ROOT = Path(__file__).resolve().parent.parent
BODY_LIMIT = 5000
# Sent after each fuzzed stream: it completes any body the server still waits for, then is no request
# at all, so that every connection must end in an answer and a close, whatever state it was left in.
TERMINATOR = b"x" * (BODY_LIMIT + 1000) + b"\r\n\r\n"


def exchange(port: int, pieces: list[bytes]) -> tuple[bytes, bool]:
    """Send the pieces (one send each), then the terminator; what came back, and whether it was closed."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in pieces + [TERMINATOR]:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused what it read so far and closed: its answer is still to be read
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                part = sock.recv(65536)
                if not part:
                    return got, True
                got += part
        except ConnectionResetError:
            return got, True
        except TimeoutError:
            pass
    return got, False


@pytest.mark.parametrize("app", ["echo_app", "wsgi_echo_app"])
def test_fuzzed_pipelines_are_answered_or_closed_and_the_worker_survives(app: str) -> None:
    with running(f"tests.http_wire:{app}", "-i", "1", "-b", "127.0.0.1:0", "--chdir", str(ROOT),
                 "--limit-request-body", str(BODY_LIMIT), "--limit-request-header-size", "4000") as master:
        port = master.wait_ready()
        with Client(port) as client:
            assert client.get("/").status == 200
        (pid,) = master.workers()
        worker = psutil.Process(pid)
        baseline = worker.num_fds()

        @settings(max_examples=300, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(requests(), min_size=1, max_size=5), MUTATIONS, st.lists(st.integers(0, 100000), max_size=6))
        def one_connection(reqs: list[Request], mutations: list[tuple[str, int, bytes]], cuts: list[int]) -> None:
            data = mutate(b"".join(r.encode() for r in reqs), mutations)
            got, closed = exchange(port, split(data, cuts))
            assert closed, f"the connection was neither answered to the end nor closed: {got[-200:]!r}"
            responses, _ = parse_responses(got)  # (a close may cut the last one: a refusal's body)
            assert all(r.status < 500 for r in responses), [r.status for r in responses]
            assert responses and 400 <= responses[-1].status < 500  # the terminator's refusal ends it

        one_connection()
        assert master.workers() == {pid: master.workers()[pid]}, "the worker was replaced"
        wait_until(lambda: worker.num_fds() <= baseline, timeout=10, what="the worker's fds back to baseline")
        with Client(port) as client:
            assert client.get("/after").status == 200
