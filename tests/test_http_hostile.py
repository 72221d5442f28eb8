"""Hostile, slow and pipelining clients against a real prun worker, over raw sockets from outside.

Every connection gets its answer (or a 400) and is closed, and its file descriptor is released; pipelined
requests are answered in order with bounded memory; slow readers get every byte; trickled heads, silent
and non-reading clients are closed on their bounds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import LoneWorker, Prun, running, wait_until
from tests.test_http_support import Client

APP = '''
import json

BIG = 20 * 1024 * 1024
CHUNK = b"x" * 65536

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/big":  # streamed in chunks: the server's backpressure paces it
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(BIG).encode())]})
        for _ in range(BIG // len(CHUNK)):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/big-once":  # one message: the app hands the server the whole body at once
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"y" * BIG})
        return
    if path == "/generated-headers":  # headers as a generator, as Sanic gives them
        headers = ((k, v) for k, v in [(b"content-type", b"text/plain"), (b"location", b"/there"),
                                       (b"set-cookie", b"a=1")])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"generated"})
        return
    if path == "/who":
        client = scope["client"]
        data = json.dumps({"client": client[0] if client else None, "scheme": scope["scheme"]}).encode()
    else:
        data = (path + "?" + scope["query_string"].decode() + " " + str(len(body))).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": data})
'''

HEADER_TIMEOUT = 2.0
KEEPALIVE = 2.0
WRITE_TIMEOUT = 6.0
G = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prun, int]]:
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "hostile.py").write_text(APP)
    with running("hostile:app", "-i", "1", "-b", "127.0.0.1:0", "--chdir", str(folder),
                 "--timeout-request-header", str(HEADER_TIMEOUT), "--keepalive-timeout", str(KEEPALIVE),
                 "--timeout-write", str(WRITE_TIMEOUT), "--limit-request-body", "100000",
                 "--limit-request-header-size", "4000") as master:
        port = master.wait_ready()
        yield master, port


def worker(master: Prun) -> psutil.Process:
    (pid,) = master.workers()
    return psutil.Process(pid)


def fds(master: Prun) -> int:
    return worker(master).num_fds()


def settle_fds(master: Prun, baseline: int) -> None:
    """The worker's fd count comes back to `baseline` (every connection's fd released)."""
    wait_until(lambda: fds(master) <= baseline, timeout=10, what=f"the worker's fds back to {baseline}")


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[list[bytes], bool]:
    """Send `data`, read until the server closes: the status codes received and whether it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        closed = False
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    closed = True
                    break
                got += part
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    statuses = [line.split(b" ")[1] for line in got.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    return statuses, closed


def still_serves(port: int) -> None:
    with Client(port) as client:
        assert client.get("/").status == 200


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(G + b"GARBAGE\r\n\r\n", [b"200"], id="malformed-second"),
        pytest.param(G + b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n", [b"200"],
                     id="second-over-body-limit"),
        pytest.param(G + b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 8000 + b"\r\n\r\n", [b"200"],
                     id="second-over-header-limit"),
        pytest.param(G + b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n", [b"200"], id="second-with-length-and-chunked"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" + G, [b"200"], id="after-close"),
        pytest.param(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n", [b"200"], id="two-http-1.0"),
        pytest.param(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [b"400"], id="http-1.0-chunked"),
        pytest.param(b"GET /\r\n", [b"400"], id="http-0.9-line"),
        pytest.param(b"GET /\r\n\r\n", [b"400"], id="http-0.9-request"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcdefgh" + G, [b"200"],
                     id="body-longer-than-length"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n" + G,
                     [b"400"], id="broken-chunk"),
        pytest.param(G + b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
                     [b"200"], id="pipelined-broken-chunk"),
        # Request smuggling: framing a proxy in front could read differently is refused, whatever follows.
        *(pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\n" + head + b"\r\n\r\nabcdef0\r\n\r\n" + G, [b"400"], id=name)
          for name, head in [
              ("two-lengths", b"Content-Length: 5\r\nContent-Length: 6"),
              ("length-list", b"Content-Length: 5, 5"),
              ("length-plus", b"Content-Length: +5"),
              ("length-space-colon", b"Content-Length : 5"),
              ("chunked-not-last", b"Transfer-Encoding: chunked, identity"),
              ("xchunked", b"Transfer-Encoding: xchunked"),
              ("chunked-twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
              ("obs-fold", b"X: a\r\n b"),
              ("nul-in-header", b"X: a\x00b"),
          ]),
    ],
)
def test_a_request_after_a_refused_one_gets_answers_then_the_close_and_its_fd_back(
    server: tuple[Prun, int], data: bytes, expected: list[bytes]
) -> None:
    master, port = server
    still_serves(port)
    baseline = fds(master)
    for _ in range(3):  # clients that do this and hang up must not leak a descriptor each
        statuses, closed = exchange(port, data)
        assert statuses[: len(expected)] == expected
        assert all(s in (b"200", b"400", b"413", b"431") for s in statuses)
        assert closed
    settle_fds(master, baseline)
    still_serves(port)


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prun, int]]:
    """A worker that would wait a minute for a head to end: only a refusal can close a connection sooner."""
    folder = tmp_path_factory.mktemp("patient")
    (folder / "hostile.py").write_text(APP)
    with running("hostile:app", "-i", "1", "-b", "127.0.0.1:0", "--chdir", str(folder),
                 "--timeout-request-header", "60", "--keepalive-timeout", "60",
                 "--limit-request-header-size", str(HEADER_LIMIT)) as master:
        port = master.wait_ready()
        yield master, port


HEADER_LIMIT = 16384  # the default


@pytest.mark.parametrize("size", [30000, HEADER_LIMIT + 4096 + 64])
def test_an_oversize_head_pipelined_behind_a_request_gets_431_at_once(patient_server: tuple[Prun, int],
                                                                      size: int) -> None:
    """The issue's case (a 30,000-byte header that never ends, behind a complete GET), and a head just past
    what the bound allows (the header limit, the request line, and less than 4 KiB counted with the
    first read): 200, then 431 and the close, long before the 60 s head timeout."""
    master, port = patient_server
    still_serves(port)
    worker = LoneWorker(master)
    head = b"GET /a HTTP/1.1\r\nHost: t\r\nX: " + b"a" * (size - 32)
    for split in (False, True):  # in one write, and the oversize head in a write of its own
        with Client(port, timeout=20) as client:
            if split:
                client.send(G)
                assert client.read().status == 200
                client.send(head)
            else:
                client.send(G + head)
                assert client.read().status == 200
            refused = client.read()
            assert refused.status == 431 and refused.headers["connection"] == "close"
            assert client.closed_by_server()
    worker.check(8 << 20, "oversize pipelined heads")
    still_serves(port)


def test_a_head_just_under_the_header_limit_is_never_refused_however_it_is_split(
        patient_server: tuple[Prun, int]) -> None:
    _, port = patient_server
    head = b"GET /b HTTP/1.1\r\nHost: t\r\nX: " + b"b" * (HEADER_LIMIT - 64)
    for cut in (1, 4095, 4096, 4097, len(head) - 1):
        with Client(port, timeout=20) as client:
            client.send(G + head[:cut])
            assert client.read().status == 200
            client.send(head[cut:])
            client.send(b"\r\n\r\n")
            assert client.read().body == b"/b? 0"


def test_10000_pipelined_gets_in_one_write_are_answered_in_order_quickly(server: tuple[Prun, int]) -> None:
    _, port = server
    count = 10000
    requests = b"".join(b"GET /p?%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(count))
    with Client(port, timeout=10) as client:
        start = time.monotonic()
        client.send(requests)
        for i in range(count):
            response = client.read()
            assert response.status == 200
            assert response.body == b"/p?%d 0" % i
        elapsed = time.monotonic() - start
    assert elapsed < 5.0, f"{count} pipelined requests took {elapsed:.1f} s"


def test_pipelining_a_client_that_does_not_read_stops_reading_with_bounded_memory(server: tuple[Prun, int]) -> None:
    master, port = server
    proc = worker(master)
    rss = proc.memory_info().rss
    with Client(port, timeout=10) as client:
        # 1 MiB of requests at a time; unbounded, the worker would hold an answer for each of ~300,000.
        batch = b"GET /q HTTP/1.1\r\nHost: t\r\n\r\n" * 36000
        sent = client.send_until_blocked(limit=64 * len(batch), chunk=batch)
        assert sent < 16 * len(batch)
        grown = proc.memory_info().rss - rss
        assert grown < 40 * 1024 * 1024, f"the worker grew by {grown / 2**20:.0f} MiB"
        client.sock.shutdown(socket.SHUT_WR)
        answered = 0
        while True:  # everything sent is answered, in order, once the client reads
            try:
                response = client.read()
            except EOFError:
                break
            assert response.body == b"/q? 0"
            answered += 1
    assert answered * len(b"GET /q HTTP/1.1\r\nHost: t\r\n\r\n") >= sent


def test_two_pipelined_30k_posts_with_the_second_head_split_across_reads(server: tuple[Prun, int]) -> None:
    _, port = server
    body = b"b" * 30000
    second = b"POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with Client(port) as client:
        client.send(b"POST /one HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body + second[:20])
        assert client.read().body == b"/one? 30000"  # the first read has been parsed
        client.send(second[20:])
        assert client.read().body == b"/two? 30000"


@pytest.mark.parametrize("path", ["/big", "/big-once"])
def test_a_slow_reader_of_a_20_mb_response_gets_every_byte_with_bounded_memory(
    server: tuple[Prun, int], path: str
) -> None:
    master, port = server
    proc = worker(master)
    rss = proc.memory_info().rss
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        time.sleep(KEEPALIVE + 2.5)  # the slow part: past the keep-alive and linger bounds
        grown = proc.memory_info().rss - rss
        received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        received = len(head.partition(b"\r\n\r\n")[2])
        while received < 20 * 1024 * 1024:
            part = sock.recv(1 << 20)
            assert part, f"the response was cut after {received} bytes"
            received += len(part)
    assert received == 20 * 1024 * 1024
    if path == "/big":  # streamed: the app is paced by the client (a single 20 MB message is the app's own)
        assert grown < 10 * 1024 * 1024, f"the worker buffered {grown / 2**20:.0f} MiB for a slow reader"
    still_serves(port)


def test_a_client_that_reads_nothing_is_dropped_after_timeout_write_and_that_is_logged(
    server: tuple[Prun, int],
) -> None:
    master, port = server
    mark = master.mark()
    with socket.create_connection(("127.0.0.1", port), timeout=WRITE_TIMEOUT + 10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        master.wait_for(r"read nothing of its response .* for 6 s", timeout=WRITE_TIMEOUT + 10, start=mark)
        received = 0
        try:  # what was already in flight, then the end: the rest of the response was dropped
            while part := sock.recv(1 << 20):
                received += len(part)
        except ConnectionResetError:
            pass
    assert received < 20 * 1024 * 1024
    still_serves(port)


def test_a_trickled_head_is_closed_after_timeout_request_header(server: tuple[Prun, int]) -> None:
    master, port = server
    still_serves(port)  # (the worker's first connection opens descriptors it keeps)
    baseline = fds(master)
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 200
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            try:
                for byte in head:
                    if stop.wait(0.1):
                        return
                    sock.send(bytes([byte]))
            except OSError:
                pass

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        got = b""
        try:
            while part := sock.recv(4096):
                got += part
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - start
        stop.set()
        thread.join(5)
    assert got.startswith(b"HTTP/1.1 408 ")
    # The server's clock ticks once a second: the bound holds to within a second either way.
    assert HEADER_TIMEOUT - 1.1 <= elapsed < HEADER_TIMEOUT + 3, elapsed
    settle_fds(master, baseline)


def test_a_connection_that_sends_nothing_is_closed_after_the_keepalive_timeout(server: tuple[Prun, int]) -> None:
    master, port = server
    still_serves(port)  # (the worker's first connection opens descriptors it keeps)
    baseline = fds(master)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""
        elapsed = time.monotonic() - start
    assert KEEPALIVE - 1.1 <= elapsed < KEEPALIVE + 3, elapsed
    settle_fds(master, baseline)


def test_response_headers_given_as_a_generator_survive_the_head_cache(server: tuple[Prun, int]) -> None:
    _, port = server
    with Client(port) as client:
        for _ in range(3):  # the first response builds the head, the next ones reuse it
            response = client.get("/generated-headers")
            assert response.body == b"generated"
            assert response.headers["content-type"] == "text/plain"
            assert response.headers["location"] == "/there"
            assert response.headers["set-cookie"] == "a=1"


def who(port: int, headers: str) -> bytes:
    with Client(port) as client:
        return client.get("/who", headers=headers).body


FORWARDED = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"


def test_proxy_headers_from_localhost_are_trusted_by_default(server: tuple[Prun, int]) -> None:
    _, port = server
    assert who(port, FORWARDED) == b'{"client": "203.0.113.7", "scheme": "https"}'
    assert who(port, "") == b'{"client": "127.0.0.1", "scheme": "http"}'


@pytest.mark.parametrize("flags", [("--no-proxy-headers",), ("--forwarded-allow-ips", "10.9.9.9")])
def test_proxy_headers_are_ignored_when_off_or_from_an_untrusted_peer(
    prun: type[Prun], tmp_path: Path, flags: tuple[str, ...]
) -> None:
    (tmp_path / "hostile.py").write_text(APP)
    master = prun("hostile:app", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), *flags)
    port = master.wait_ready()
    assert who(port, FORWARDED) == b'{"client": "127.0.0.1", "scheme": "http"}'


WSGI_APP = '''
import threading

released = threading.Event()

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/events":  # server-sent events: the second waits until the client has seen the first
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        def events():
            yield b"data: one\\n\\n"
            released.wait(10)
            yield b"data: two\\n\\n"
        return events()
    if path == "/release":
        released.set()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(environ["SCRIPT_NAME"] + " " + path).encode()]
'''


@pytest.fixture(scope="module")
def wsgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("wsgi_hostile")
    (folder / "streaming.py").write_text(WSGI_APP)
    with running("streaming:app", "-b", "127.0.0.1:0", "--chdir", str(folder), "--interface", "wsgi",
                 "--root-path", "/api") as master:
        yield master.wait_ready()


def test_a_streamed_wsgi_body_sends_each_chunk_when_it_is_produced(wsgi_server: int) -> None:
    with socket.create_connection(("127.0.0.1", wsgi_server), timeout=10) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while b"data: one" not in got:  # arrives before the app goes on: nothing is held back
            part = sock.recv(4096)
            assert part, got
            got += part
        assert b"data: two" not in got
        with Client(wsgi_server) as other:
            assert other.get("/release").status == 200
        while b"0\r\n\r\n" not in got:
            got += sock.recv(4096)
    assert b"transfer-encoding: chunked" in got
    assert b"data: two" in got


@pytest.mark.parametrize(("path", "seen"), [("/x", b"/api /x"), ("/api/x", b"/api /x"), ("/api", b"/api "),
                                            ("/apix", b"/api /apix")])
def test_wsgi_root_path_already_in_the_request_goes_to_script_name_once(
    wsgi_server: int, path: str, seen: bytes
) -> None:
    with Client(wsgi_server) as client:
        assert client.get(path).body == seen


FORM_APP = '''
def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"read %d" % len(body)]
'''


def test_wsgi_bodies_trickled_do_not_hold_the_thread_pool_and_time_out(prun: type[Prun], tmp_path: Path) -> None:
    (tmp_path / "form.py").write_text(FORM_APP)
    master = prun("form:app", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "--interface", "wsgi",
                  "--threads", "1", "--timeout-request-header", str(HEADER_TIMEOUT))
    port = master.wait_ready()
    slow = []
    for _ in range(3):  # more tricklers than threads: each sends a tenth of its announced body, then waits
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"b" * 10)
        slow.append(sock)
    try:
        with Client(port) as client:  # the one thread is free for a request that arrives whole
            start = time.monotonic()
            response = client.get("/")
            assert response.body == b"read 0"
            assert time.monotonic() - start < HEADER_TIMEOUT / 2
        for sock in slow:  # and the tricklers are timed out like a slow head
            assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in slow:
            sock.close()
    with Client(port) as client:  # a body that does arrive is read in full
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde")
        assert client.read().body == b"read 5"


def test_the_daemon_passes_proxy_headers_off_on_to_the_master() -> None:
    from prun.cluster.client import run_arguments

    assert run_arguments({"proxy_headers": False}) == ["--no-proxy-headers"]
    assert run_arguments({"proxy_headers": True}) == ["--proxy-headers"]
    assert run_arguments({"proxy_headers": None}) == []
