"""Bad input and misbehaving apps get a status code, are logged once, and never take the worker down."""

from __future__ import annotations

import asyncio
import http.client
import threading
from typing import Any

import pytest

from tests.test_http_support import Client, ok, serving


def still_serves(port: int) -> bool:
    with Client(port) as client:
        return client.get("/").status == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ],
)
def test_malformed_request_gets_400(raw: bytes) -> None:
    with serving(ok()) as srv:
        with Client(srv.port) as client:
            client.send(raw)
            response = client.read()
            assert response.status == 400
            assert response.headers["connection"] == "close"
            assert client.closed_by_server()
        assert still_serves(srv.port)


def test_request_line_over_the_limit_gets_414() -> None:
    with serving(ok(), limit_request_line=100) as srv:
        with Client(srv.port) as client:
            assert client.get("/" + "a" * 50).status == 200
            assert client.get("/" + "a" * 200).status == 414
        with Client(srv.port) as client:  # a URL that arrives in pieces, never ending
            client.send(b"GET /" + b"b" * 30000)
            assert client.read().status == 414
        assert still_serves(srv.port)


def test_header_section_over_the_limit_gets_431() -> None:
    with serving(ok(), limit_request_header_size=1000) as srv:
        with Client(srv.port) as client:
            assert client.get("/", headers="X-A: " + "a" * 500 + "\r\n").status == 200
            assert client.get("/", headers="".join(f"X-{i}: {'v' * 100}\r\n" for i in range(20))).status == 431
        with Client(srv.port) as client:  # one header that never ends
            client.send(b"GET / HTTP/1.1\r\nX-Long: " + b"z" * 60000)
            assert client.read().status == 431
        assert still_serves(srv.port)


def test_body_over_the_limit_gets_413() -> None:
    seen: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            total += len(message["body"])
            if not message["more_body"]:
                break
        seen.append(total)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(app, limit_request_body=1000) as srv:
        with Client(srv.port) as client:  # announced too large: refused before the body is read
            client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
            assert client.read().status == 413
        with Client(srv.port) as client:  # chunked, growing past the limit
            client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            client.send(b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(8)))
            assert client.read().status == 413
        with Client(srv.port) as client:
            client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"y" * 1000)
            assert client.read().status == 200
        assert seen == [1000]


def test_exception_before_the_response_gets_500_and_is_logged_once(capsys: pytest.CaptureFixture[str]) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/boom":
            raise ValueError("kaboom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"fine"})

    with serving(app) as srv:
        with Client(srv.port) as client:
            response = client.get("/boom")
            assert response.status == 500
            assert response.headers["connection"] == "close"
        assert still_serves(srv.port)
    err = capsys.readouterr().err
    assert err.count("ValueError: kaboom") == 1
    assert "Traceback" in err and "GET /boom" in err


def test_exception_after_the_response_started_closes_the_connection(capsys: pytest.CaptureFixture[str]) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("midway")

    with serving(app) as srv:
        with Client(srv.port) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            head = client.file.readline()
            assert head.startswith(b"HTTP/1.1 200")
            client.file.read()  # everything until the server closes: the client sees a truncated body
    assert capsys.readouterr().err.count("RuntimeError: midway") == 1


def test_app_returning_without_a_response_gets_500(capsys: pytest.CaptureFixture[str]) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    with serving(app) as srv:
        with Client(srv.port) as client:
            assert client.get("/").status == 500
    assert "returned without completing its response" in capsys.readouterr().err


def test_suspending_app_that_fails_gets_500() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.01)
        raise KeyError("later")

    with serving(app) as srv:
        with Client(srv.port) as client:
            assert client.get("/").status == 500
        with Client(srv.port) as client:
            assert client.get("/").status == 500


def test_response_longer_than_its_content_length_closes_the_connection() -> None:
    with serving(ok(b"0123456789", headers=[(b"content-length", b"4")])) as srv:
        with Client(srv.port) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            # The head went out, the body did not: no extra byte beyond the announced length ever arrives.
            data = client.file.read()
            assert data.startswith(b"HTTP/1.1 200") or data == b""
            assert b"0123456789" not in data


def test_invalid_header_value_from_the_app_is_refused() -> None:
    with serving(ok(headers=[(b"x-evil", b"a\r\nset-cookie: stolen=1")])) as srv:
        with Client(srv.port) as client:
            response = client.get("/")
            assert response.status == 500
            assert "set-cookie" not in response.headers


def test_requests_over_the_concurrency_limit_get_503() -> None:
    entered = threading.Event()
    release = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            entered.set()
            while not release.is_set():
                await asyncio.sleep(0.005)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    with serving(app, limit_concurrency=1) as srv:
        with Client(srv.port) as holder, Client(srv.port) as other:
            holder.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
            assert entered.wait(5)
            assert other.get("/").status == 503
            release.set()
            assert holder.read().body == b"done"
        assert still_serves(srv.port)


BODY_SIZE_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(str(size)))]})
    await send({"type": "http.response.body", "body": str(size).encode()})
'''


@pytest.mark.parametrize(("limit", "status"), [("10", 413), ("0", 200)])
def test_limit_request_body_in_a_real_worker_zero_means_no_limit(prun, tmp_path, limit: str, status: int) -> None:
    (tmp_path / "sizes.py").write_text(BODY_SIZE_APP)
    master = prun("sizes:app", "-b", "127.0.0.1:0", "--limit-request-body", limit, cwd=tmp_path)
    port = master.wait_ready()
    body = b"x" * (1 << 20)
    for headers in ({"Content-Length": str(len(body))}, {"Transfer-Encoding": "chunked"}):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            payload = body if "Content-Length" in headers else iter([body[:1000], body[1000:]])
            conn.request("POST", "/", body=payload, headers=headers, encode_chunked="Content-Length" not in headers)
            response = conn.getresponse()
            assert response.status == status, headers
            if status == 200:
                assert response.read() == str(len(body)).encode()
        finally:
            conn.close()
