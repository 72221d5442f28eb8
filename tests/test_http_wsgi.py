"""WSGI apps on the thread pool: PEP 3333 environ, streamed wsgi.input, start_response, write(), close()."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import httpx
import pytest

from tests.test_http_support import Client, collector_off, serving


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    view = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
    view["body"] = body.decode()
    view["errors_is_stderr"] = environ["wsgi.errors"] is sys.stderr
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(view).encode()]


def test_environ_follows_pep_3333() -> None:
    with serving(environ_app, "wsgi", root_path="/mount") as srv:
        response = httpx.post(
            f"http://127.0.0.1:{srv.port}/a%20b?x=1",
            content=b"payload",
            headers={"Content-Type": "text/plain", "X-Multi": "1", "Cookie": "a=1"},
        )
    env = response.json()
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/mount"
    assert env["PATH_INFO"] == "/a b"
    assert env["QUERY_STRING"] == "x=1"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "7"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_MULTI"] == "1" and env["HTTP_COOKIE"] == "a=1"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.run_once"] is False
    assert env["errors_is_stderr"] is True
    assert env["body"] == "payload"


def test_wsgi_input_streams_while_the_client_is_still_sending() -> None:
    first_line = threading.Event()
    lines: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        lines.append(stream.readline())
        first_line.set()
        lines.extend(stream)  # iterating reads line by line until the body ends
        start_response("200 OK", [])
        return [b"%d lines" % len(lines)]

    with serving(app, "wsgi") as srv, Client(srv.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
        assert first_line.wait(5)  # the app read its first line while the rest was not sent yet
        client.send(b"7\r\nsecond\n\r\n6\r\nthird\n\r\n0\r\n\r\n")
        assert client.read().body == b"3 lines"
    assert lines == [b"first\n", b"second\n", b"third\n"]


def test_read_with_sizes_and_expect_continue() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        parts = [stream.read(3), stream.read(3), stream.read()]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"|".join(parts)]

    with serving(app, "wsgi") as srv, Client(srv.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n")
        assert client.read().status == 100
        client.send(b"abcdefgh")
        assert client.read().body == b"abc|def|gh"


def test_large_upload_is_read_in_full_with_flow_control() -> None:
    size = 8 * 1024 * 1024

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        total = 0
        while True:
            chunk = environ["wsgi.input"].read(65536)
            if not chunk:
                break
            total += len(chunk)
        start_response("200 OK", [])
        return [str(total).encode()]

    with serving(app, "wsgi") as srv:
        response = httpx.post(f"http://127.0.0.1:{srv.port}/", content=b"z" * size, timeout=30)
    assert response.text == str(size)


def test_iterable_is_closed_and_streamed_chunked() -> None:
    closed = threading.Event()

    class Body:
        def __iter__(self) -> Any:
            yield b"one,"
            yield b""
            yield b"two"

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("201 Created", [("X-Kind", "stream")])
        return Body()

    with serving(app, "wsgi") as srv, Client(srv.port) as client:
        response = client.get("/")
        assert response.status == 201 and response.reason == "Created"
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["x-kind"] == "stream"
        assert response.body == b"one,two"
        assert closed.wait(5)


def test_write_callable() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Length", "11")])
        write(b"hello ")
        return [b"world"]

    with serving(app, "wsgi") as srv, Client(srv.port) as client:
        response = client.get("/")
        assert response.body == b"hello world"
        assert client.get("/").body == b"hello world"


def test_start_response_with_exc_info_replaces_the_response_before_it_is_sent() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    with serving(app, "wsgi") as srv, Client(srv.port) as client:
        response = client.get("/")
        assert response.status == 500 and response.body == b"sorry"


def test_start_response_twice_without_exc_info_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]

    with serving(app, "wsgi") as srv, Client(srv.port) as client:
        assert client.get("/").status == 500
    assert "start_response was called twice" in capsys.readouterr().err


def test_exception_in_a_wsgi_app_gets_500_and_the_worker_survives(capsys: pytest.CaptureFixture[str]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise ZeroDivisionError("nope")
        start_response("200 OK", [])
        return [b"fine"]

    with serving(app, "wsgi") as srv:
        with Client(srv.port) as client:
            assert client.get("/boom").status == 500
        with Client(srv.port) as client:
            assert client.get("/").body == b"fine"
    assert capsys.readouterr().err.count("ZeroDivisionError: nope") == 1


def test_requests_run_on_a_bounded_pool() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=5)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            gate.wait()  # two requests must run at once
        except threading.BrokenBarrierError:
            pass
        with lock:
            running -= 1
        start_response("200 OK", [])
        return [b"ok"]

    with serving(app, "wsgi", threads=2) as srv:
        with httpx.Client() as hc:
            threads = [threading.Thread(target=hc.get, args=(f"http://127.0.0.1:{srv.port}/",)) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
    assert peak == 2


def test_unread_upload_stops_the_server_reading_until_the_app_reads() -> None:
    go = threading.Event()
    size = 64 * 1024 * 1024

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        go.wait(10)
        total = 0
        while chunk := environ["wsgi.input"].read(1 << 20):
            total += len(chunk)
        start_response("200 OK", [])
        return [str(total).encode()]

    with serving(app, "wsgi", limit_request_body=size) as srv, Client(srv.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        assert client.send_until_blocked(size) < size // 2  # the kernel buffers fill: the server stopped reading
        go.set()
        # Part of the timed-out chunk may have gone out: keep sending until the server has the announced
        # length and answers (anything beyond it is refused later; only the first response matters).
        client.keep_sending()
        response = client.read()
        assert response.status == 200 and int(response.body) == size


def test_requests_leave_nothing_for_the_garbage_collector_and_a_stray_later_read_does_not_block() -> None:
    # A request's exchange and its body stream refer to each other only while the app's call runs: a
    # cycle per request would be left for the collector (a tenth of a Flask request's CPU).
    from prun.runtime.http.wsgi import WsgiExchange

    streams: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        streams.append(stream)
        body = stream.read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with serving(app, "wsgi") as srv, collector_off() as alive:
        before = alive(WsgiExchange)
        with httpx.Client() as client:
            for i in range(10):  # bodiless GETs, small POSTs, and chunked (streamed) POSTs
                url = f"http://127.0.0.1:{srv.port}/"
                assert client.get(url).content == b""
                assert client.post(url, content=b"x" * i).content == b"x" * i
                assert client.post(url, content=iter([b"a", b"b"])).content == b"ab"
        assert srv.wait_no_connections(5)
        assert alive(WsgiExchange) == before
    # A stream the app kept and reads after its call returned: what was left, at once, then the end.
    assert [stream.read() for stream in streams[-3:]] == [b"", b"", b""]
