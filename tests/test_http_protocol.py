"""The HTTP/1.1 protocol with an ASGI app: keep-alive, pipelining, bodies, HEAD, 100-continue, disconnects."""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import socket
import threading
from typing import Any

import httpx
import pytest

from tests.support import wait_until
from tests.test_http_support import Client, app_timeout, collector_off, ok, serving


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with a JSON view of the scope and the body it read."""
    if scope["type"] != "http":
        return
    body = b""
    chunks = 0
    while True:
        message = await receive()
        body += message.get("body", b"")
        chunks += 1
        if not message.get("more_body"):
            break
    view = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode(),
        "root_path": scope["root_path"],
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "client": scope["client"],
        "server": scope["server"],
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "asgi": scope["asgi"],
        "type": scope["type"],
        "body": body.decode("latin-1"),
        "chunks": chunks,
    }
    data = json.dumps(view).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def test_keep_alive_serves_many_requests_on_one_connection_with_date_and_server_headers() -> None:
    with serving(ok(b"hello")) as srv, Client(srv.port) as client:
        for _ in range(3):
            response = client.get("/")
            assert response.status == 200
            assert response.body == b"hello"
            assert response.headers["content-length"] == "5"
            assert response.headers["server"] == "prun"
            assert response.headers["date"].endswith(" GMT")
            assert "connection" not in response.headers
        assert srv.server.requests == 3
        assert srv.server.connections == 1


def test_scope_is_complete_and_path_percent_decoded() -> None:
    with serving(echo_app) as srv:
        response = httpx.get(f"http://127.0.0.1:{srv.port}/a%20b/%C3%A9?x=1&y=%20", headers={"X-Thing": "Yes"})
    view = response.json()
    assert view["type"] == "http"
    assert view["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert view["http_version"] == "1.1"
    assert view["method"] == "GET"
    assert view["path"] == "/a b/é"
    assert view["raw_path"] == "/a%20b/%C3%A9"
    assert view["query_string"] == "x=1&y=%20"
    assert view["root_path"] == ""
    assert ["x-thing", "Yes"] in view["headers"]
    assert all(name == name.lower() for name, _ in view["headers"])
    assert view["client"][0] == "127.0.0.1" and view["client"][1] > 0
    assert view["server"] == ["127.0.0.1", srv.port]
    assert view["scheme"] == "http"


def test_root_path_prefixes_path_and_raw_path() -> None:
    with serving(echo_app, root_path="/api") as srv:
        view = httpx.get(f"http://127.0.0.1:{srv.port}/users").json()
    assert view["root_path"] == "/api"
    assert view["path"] == "/api/users"
    assert view["raw_path"] == "/api/users"


def test_pipelined_requests_are_answered_in_order() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)  # the first request suspends; the others must still wait their turn
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    with serving(app) as srv, Client(srv.port) as client:
        client.send(b"".join(f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in ("/slow", "/b", "/c", "/d")))
        assert [client.read().body for _ in range(4)] == [b"/slow", b"/b", b"/c", b"/d"]


def test_pipelined_requests_with_bodies() -> None:
    with serving(echo_app) as srv, Client(srv.port) as client:
        client.send(
            b"POST /1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
            b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        views = [json.loads(client.read().body) for _ in range(3)]
    assert [(v["path"], v["body"]) for v in views] == [("/1", "abc"), ("/2", "def"), ("/3", "")]


def test_chunked_request_body_is_streamed_to_the_app() -> None:
    arrived = threading.Event()
    seen: list[tuple[bytes, bool]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.append((message["body"], message["more_body"]))
            arrived.set()
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"".join(b for b, _ in seen)})

    with serving(app) as srv, Client(srv.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        assert arrived.wait(5)  # the first chunk reaches the app before the body is complete
        assert seen[0] == (b"hello", True)
        client.send(b"6\r\n world\r\n0\r\n\r\n")
        response = client.read()
    assert response.body == b"hello world"
    assert seen[-1][1] is False


def test_chunked_response_when_the_app_streams_without_length() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serving(app) as srv, Client(srv.port) as client:
        response = client.get("/")
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        assert response.body == b"one two three"
        assert client.get("/").body == b"one two three"  # the connection is still usable
        with httpx.Client() as hc:
            assert hc.get(f"http://127.0.0.1:{srv.port}/").text == "one two three"


def test_streamed_response_with_content_length_is_not_chunked() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})

    with serving(app) as srv, Client(srv.port) as client:
        response = client.get("/")
    assert response.headers["content-length"] == "6"
    assert "transfer-encoding" not in response.headers
    assert response.body == b"abcdef"


def test_head_sends_headers_without_body() -> None:
    with serving(ok(b"twelve bytes", headers=[(b"content-length", b"12")])) as srv, Client(srv.port) as client:
        client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        response = client.read(head=True)
        assert response.status == 200
        assert response.headers["content-length"] == "12"
        # No body bytes were written: the next response follows the head directly.
        assert client.get("/").body == b"twelve bytes"


def test_expect_100_continue() -> None:
    with serving(echo_app) as srv, Client(srv.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = client.read()
        assert interim.status == 100
        client.send(b"data")
        response = client.read()
    assert response.status == 200
    assert json.loads(response.body)["body"] == "data"


def test_expect_100_continue_not_sent_when_the_app_answers_without_reading() -> None:
    with serving(ok(b"no thanks", status=403)) as srv, Client(srv.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        response = client.read()
        assert response.status == 403
        assert response.headers["connection"] == "close"  # the announced body may still come: do not reuse
        assert client.closed_by_server()


def test_client_disconnect_reaches_the_app_as_http_disconnect() -> None:
    got: list[str] = []
    done = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        got.append((await receive())["type"])  # blocks until the client goes away
        done.set()

    with serving(app) as srv:
        with Client(srv.port) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert done.wait(5)
    assert got == ["http.disconnect"]


def test_request_and_connection_counters_and_change_callback() -> None:
    with serving(ok()) as srv:
        with Client(srv.port) as client:
            client.get("/")
            client.get("/")
            assert srv.call(lambda: srv.server.connections) == 1
        with httpx.Client() as hc:
            hc.get(f"http://127.0.0.1:{srv.port}/")
    assert srv.server.requests == 3
    assert srv.changes >= 3  # opened, closed, opened...


def test_request_limit_calls_on_limit_once() -> None:
    with serving(ok()) as srv:
        srv.server.request_limit = 2
        with Client(srv.port) as client:
            for _ in range(4):
                assert client.get("/").status == 200
    assert srv.limit_hits == 1


def test_http_1_0_closes_unless_keep_alive() -> None:
    with serving(ok(b"x")) as srv:
        with Client(srv.port) as client:
            client.send(b"GET / HTTP/1.0\r\n\r\n")
            response = client.read()
            assert response.body == b"x"
            assert response.headers["connection"] == "close"
            assert client.closed_by_server()
        with Client(srv.port) as client:
            client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert client.read().headers["connection"] == "keep-alive"
            client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert client.read().body == b"x"


@pytest.mark.parametrize(
    ("version", "connection", "kept"),
    [("1.1", "", True), ("1.1", "Connection: keep-alive\r\n", True), ("1.1", "Connection: close\r\n", False),
     ("1.0", "", False), ("1.0", "Connection: keep-alive\r\n", True), ("1.0", "Connection: close\r\n", False)],
)
def test_the_scope_names_the_request_http_version_with_or_without_a_connection_header(
    version: str, connection: str, kept: bool
) -> None:
    with serving(echo_app) as srv, Client(srv.port) as client:
        # A kept HTTP/1.1 connection's next request comes without the header (HTTP/1.0 must ask again).
        heads = [connection, connection if version == "1.0" else ""] if kept else [connection]
        for extra in heads:
            client.send(f"GET / HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode())
            response = client.read()
            assert json.loads(response.body)["http_version"] == version
            assert (response.headers.get("connection") != "close") is kept
        if not kept:
            assert client.closed_by_server()


def test_http_2_0_in_a_request_line_is_refused() -> None:  # llhttp parses it; prun serves 1.0 and 1.1 only
    with serving(echo_app) as srv, Client(srv.port) as client:
        client.send(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
        assert client.read().status == 400


def test_client_connection_close_is_honoured() -> None:
    with serving(ok()) as srv, Client(srv.port) as client:
        response = client.get("/", headers="Connection: close\r\n")
        assert response.headers["connection"] == "close"
        assert client.closed_by_server()


def test_idle_keep_alive_connection_is_closed_after_the_timeout() -> None:
    with serving(ok(), keepalive_timeout=0.2) as srv, Client(srv.port, timeout=5) as client:
        assert client.get("/").status == 200
        assert client.closed_by_server()  # by the once-a-second sweep, well within the socket timeout
    assert srv.server.connections == 0


def test_request_body_flow_control_pauses_reading_until_the_app_reads() -> None:
    go = threading.Event()
    size = 64 * 1024 * 1024

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while not go.is_set():
            await asyncio.sleep(0.01)
        total = 0
        while True:
            message = await receive()
            total += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(total).encode()})

    with serving(app, limit_request_body=size) as srv, Client(srv.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        assert client.send_until_blocked(size) < size // 2  # the kernel buffers fill: the server stopped reading
        go.set()
        # Part of the timed-out chunk may have gone out: keep sending until the server has the announced
        # length and answers (anything beyond it is refused later; only the first response matters).
        client.keep_sending()
        response = client.read()
        assert response.status == 200 and int(response.body) == size


def test_app_that_suspends_runs_in_a_task_with_its_own_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        before = var.get()
        var.set(scope["path"])
        first = asyncio.current_task()
        async with app_timeout(5):  # needs a current task, before and after suspending
            await asyncio.sleep(0.01)
        seen.append((before, var.get(), first is not None, first is asyncio.current_task()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(app) as srv, Client(srv.port) as client:
        assert client.get("/one").status == 200
        assert client.get("/two").status == 200
    assert seen == [("unset", "/one", True, True), ("unset", "/two", True, True)]


def test_app_timeout_cancels_the_suspended_app() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            async with app_timeout(0.05):
                await asyncio.sleep(10)
            text = b"not cancelled"
        except TimeoutError:
            text = b"timed out"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": text})

    with serving(app) as srv, Client(srv.port) as client:
        assert client.get("/").body == b"timed out"


def test_app_still_running_after_its_response_does_not_block_the_next_request() -> None:
    release = asyncio.Event()
    finished = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})
        if scope["path"] == "/background":
            await release.wait()  # background work after the response
            finished.set()
        elif scope["path"] == "/release":
            release.set()

    with serving(app) as srv, Client(srv.port) as client:
        assert client.get("/background").body == b"/background"
        assert client.get("/release").body == b"/release"
        assert finished.wait(5)


def test_json_and_common_access_logs(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(ok(b"abc"), access_log="json") as srv, Client(srv.port) as client:
        client.get("/p?q=1")
    with serving(ok(b"abcd", status=201), access_log="common") as srv, Client(srv.port) as client:
        client.get("/c")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[0])
    assert entry["method"] == "GET" and entry["path"] == "/p?q=1" and entry["status"] == 200
    assert entry["bytes"] == 3 and entry["client"].startswith("127.0.0.1:")
    assert isinstance(entry["duration"], float) and re.fullmatch(r"[\d-]+T[\d:]+\.\d{3}[+-]\d\d:\d\d", entry["time"])
    assert lines[1].startswith("127.0.0.1 - - [")
    assert lines[1].endswith('] "GET /c HTTP/1.1" 201 4')


def test_access_log_is_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(ok()) as srv, Client(srv.port) as client:
        client.get("/")
    assert capsys.readouterr().out == ""


def test_proxy_headers_from_a_trusted_peer_set_client_and_scheme() -> None:
    headers = {"X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Forwarded-Proto": "https"}
    with serving(echo_app, proxy_headers=True, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as srv:
        view = httpx.get(f"http://127.0.0.1:{srv.port}/", headers=headers).json()
    assert view["client"] == ["203.0.113.7", 0]
    assert view["scheme"] == "https"


def test_proxy_headers_from_an_untrusted_peer_are_ignored() -> None:
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with serving(echo_app, proxy_headers=True, forwarded_allow_ips="192.0.2.1") as srv:
        view = httpx.get(f"http://127.0.0.1:{srv.port}/", headers=headers).json()
    assert view["client"][0] == "127.0.0.1"
    assert view["scheme"] == "http"
    with serving(echo_app, proxy_headers=False, forwarded_allow_ips="*") as srv:
        view = httpx.get(f"http://127.0.0.1:{srv.port}/", headers=headers).json()
    assert view["client"][0] == "127.0.0.1"


def test_proxy_headers_with_star_trust_everyone() -> None:
    with serving(echo_app, proxy_headers=True, forwarded_allow_ips="*") as srv:
        view = httpx.get(f"http://127.0.0.1:{srv.port}/", headers={"X-Forwarded-For": "198.51.100.2"}).json()
    assert view["client"] == ["198.51.100.2", 0]


def test_unix_socket_listener() -> None:
    import os
    import tempfile

    import uvloop

    from prun.runtime.http import make_http_server
    from prun.runtime.options import WorkerOptions

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(16)
        loop = uvloop.new_event_loop()
        server = make_http_server(echo_app, "asgi", WorkerOptions(), loop)

        async def main() -> dict[str, Any]:
            await server.startup()
            await server.serve([listener])
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"GET /u HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            await server.drain(1)
            return json.loads(data.split(b"\r\n\r\n", 1)[1])

        try:
            view = loop.run_until_complete(main())
        finally:
            loop.close()
            listener.close()
    assert view["path"] == "/u"
    assert view["client"] is None
    assert view["server"] == [path, None]


def test_a_non_websocket_upgrade_is_answered_as_plain_http_then_closed() -> None:
    with serving(echo_app) as srv, Client(srv.port) as client:
        client.send(b"GET /h2 HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        response = client.read()
        assert response.status == 200 and json.loads(response.body)["path"] == "/h2"
        assert response.headers["connection"] == "close"
        assert client.closed_by_server()


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


async def ws_echo_once(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket" and scope["scheme"] == "ws" and scope["path"] == "/ws"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "text": "got " + message["text"]})
    await send({"type": "websocket.close", "code": 1000})


def test_a_frame_sent_with_the_upgrade_reaches_the_app_after_it_accepts() -> None:
    with serving(ws_echo_once) as srv, Client(srv.port) as client:
        client.send(UPGRADE + b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"ab")))  # masked "hi"
        head = client.read(head=True)
        assert head.status == 101 and head.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert client.file.read(8) == b"\x81\x06got hi"
        assert client.file.read(4) == b"\x88\x02\x03\xe8"  # then the close frame, 1000


def test_a_websocket_upgrade_is_refused_with_400_under_ws_none() -> None:
    with serving(ws_echo_once, ws="none") as srv, Client(srv.port) as client:
        client.send(UPGRADE)
        assert client.read().status == 400
        assert client.closed_by_server()


def test_connection_handed_over_by_the_master_is_served() -> None:
    """leastconn balancing: the master accepts and passes the connection to accept()."""
    with serving(ok(b"handed over")) as srv, socket.socket() as front:
        front.bind(("127.0.0.1", 0))
        front.listen(1)
        with socket.create_connection(front.getsockname(), timeout=5) as raw:
            conn, _ = front.accept()
            srv.call(srv.server.accept, conn)
            raw.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := raw.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nhanded over")


def test_repeated_responses_keep_their_own_length_and_framing() -> None:
    """Response heads are reused between alike responses: each still gets its own length and framing."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        n = int(scope["path"][1:])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"x" * n, "more_body": n == 0})
        if n == 0:
            await send({"type": "http.response.body", "body": b"streamed"})

    with serving(app) as srv, Client(srv.port) as client:
        for n in (3, 5, 3, 0, 5, 0):
            response = client.get(f"/{n}")
            if n:
                assert response.headers["content-length"] == str(n) and response.body == b"x" * n
            else:
                assert response.headers["transfer-encoding"] == "chunked" and response.body == b"streamed"
        last = client.get("/3", headers="Connection: close\r\n")
        assert last.headers["connection"] == "close" and last.body == b"xxx"


def test_reused_heads_tell_close_from_keep_alive_and_take_header_pairs_as_lists() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [[b"content-type", b"text/plain"], [b"content-length", b"2"]]  # lists, as uvicorn's docs write
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hi"})

    with serving(app) as srv:
        for _ in range(2):  # each kind of head built once, then reused (within the same second)
            with Client(srv.port) as client:
                closing = client.get("/", "Connection: close\r\n")
                assert (closing.headers["connection"], closing.body) == ("close", b"hi")
                assert client.sock.recv(1) == b""
            with Client(srv.port) as client:
                for _ in range(2):
                    kept = client.get("/")
                    assert "connection" not in kept.headers and kept.body == b"hi"
                    assert kept.headers["content-type"] == "text/plain"
        # Both kinds are in the cache (one only if the once-a-second Date change emptied it in between).
        assert 1 <= srv.call(lambda: len(srv.server.shared.heads)) <= 2


def test_starlette_middleware_background_tasks_and_thread_pool() -> None:
    """anyio task groups, thread pools and background tasks need a real current task from the first step."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    done = threading.Event()

    class Tag(BaseHTTPMiddleware):
        async def dispatch(self, request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["x-tag"] = "yes"
            return response

    def sync_view(request: Any) -> Any:
        return PlainTextResponse("sync", background=BackgroundTask(done.set))

    async def async_view(request: Any) -> Any:
        return PlainTextResponse("async")

    app = Starlette(routes=[Route("/sync", sync_view), Route("/async", async_view)], middleware=[Middleware(Tag)])
    with serving(app) as srv, Client(srv.port) as client:
        for _ in range(3):
            for path, body in (("/sync", b"sync"), ("/async", b"async")):
                response = client.get(path)
                assert (response.status, response.body, response.headers["x-tag"]) == (200, body, "yes")
        assert done.wait(5)


def test_an_app_that_does_not_suspend_costs_no_task_per_request() -> None:
    with serving(ok(b"fast")) as srv, srv.counting_tasks() as created, Client(srv.port) as client:
        for _ in range(50):
            assert client.get("/").body == b"fast"
    assert len(created) <= 1  # at most the connection's host task


def test_a_client_that_said_close_is_closed_at_once_and_one_with_unread_body_lingers() -> None:
    with serving(ok(b"bye")) as srv:
        # Connection: close, nothing unread: the server closes its side outright, while the client
        # still holds its socket open (no lingering for the client's FIN).
        with Client(srv.port) as client:
            response = client.get("/", "Connection: close\r\n")
            assert response.body == b"bye" and response.headers["connection"] == "close"
            assert client.sock.recv(1) == b""
            assert srv.wait_no_connections(1.5), "the server lingered"  # well inside LINGER_SECONDS (2 s)
        # Part of the body unread (the app answered without reading it): half-close and linger, so the
        # unread bytes cannot turn the close into a reset that destroys the response.
        with Client(srv.port) as client:
            client.send(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
            response = client.read()
            assert response.body == b"bye"
            assert client.sock.recv(1) == b""
            assert srv.call(lambda: [p.lingering for p in srv.server.shared.protocols]) == [True]


def test_connections_one_after_another_reuse_host_tasks() -> None:
    with serving(ok(b"fast")) as srv, srv.counting_tasks() as created:
        for _ in range(40):
            with Client(srv.port) as client:
                assert client.get("/", "Connection: close\r\n").body == b"fast"
    # A connection's host task is parked when it closes and the next connection takes it; a few more
    # are made only when a connection opens before the previous one's close was seen.
    assert 1 <= len(created) <= 5, len(created)


def test_a_closed_connection_is_freed_without_the_garbage_collector() -> None:
    # A connection's objects must go when it closes, not linger as a cycle until the collector runs:
    # with a new connection per request, collecting them cost more than a tenth of the worker's CPU.
    from prun.runtime.http.protocol import HttpProtocol

    with serving(ok(b"fast")) as srv, collector_off() as alive:
        before = alive(HttpProtocol)
        for i in range(30):
            with Client(srv.port) as client:  # the server closes (Connection: close), or the client does
                assert client.get("/", "Connection: close\r\n" if i % 2 else "").body == b"fast"
        assert srv.wait_no_connections(5)
        assert alive(HttpProtocol) == before


def test_a_reused_host_task_is_the_current_task_of_each_request_and_a_parked_one_can_be_cancelled() -> None:
    tasks: list[Any] = []
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        task = asyncio.current_task()
        tasks.append(task)
        async with app_timeout(5):
            await asyncio.sleep(0.005)
        seen.append(task is asyncio.current_task())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    def get(srv: Any, path: str) -> bytes:
        with Client(srv.port) as client:
            body = client.get(path, "Connection: close\r\n").body
        assert srv.wait_no_connections(5)  # the server saw the close: its host task is parked
        return body

    with serving(app) as srv:
        assert get(srv, "/one") == b"/one"
        assert get(srv, "/two") == b"/two"
        assert tasks[0] is tasks[1]  # the second connection took the first one's parked host task
        srv.call(tasks[0].cancel)  # a stray cancel of a task whose request is long over, while it is parked
        assert get(srv, "/three") == b"/three"
        assert get(srv, "/four") == b"/four"
    assert seen == [True] * 4
    assert tasks[2] is not tasks[0] and tasks[3] is tasks[2]  # the cancelled task ended; a new one serves


def test_app_cancelling_its_own_task_in_its_first_step_is_cancelled_at_its_next_await() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(1)
            text = b"not cancelled"
        except asyncio.CancelledError:
            text = b"cancelled"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": text})

    with serving(app) as srv, Client(srv.port) as client:
        assert client.get("/").body == b"cancelled"
        assert client.get("/").body == b"cancelled"  # the connection's host task lives on


def test_pipelined_requests_waiting_are_bounded_while_the_app_is_busy() -> None:
    from prun.runtime.http.settings import FEED_SLICE, PIPELINE_LIMIT

    release = threading.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while not release.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["query_string"]})

    request = b"GET /?%05d HTTP/1.1\r\nHost: t\r\n\r\n"
    with serving(slow) as srv, Client(srv.port, timeout=10) as client:
        client.send(b"".join(request % i for i in range(3000)))  # ~100 KB: all of it reaches the worker
        waiting = lambda: srv.call(lambda: [len(p.queue) for p in srv.server.protocols])  # noqa: E731
        wait_until(lambda: waiting() and waiting()[0] >= PIPELINE_LIMIT, what="the pipeline to fill")
        assert waiting()[0] <= PIPELINE_LIMIT + FEED_SLICE // len(request % 0) + 1
        release.set()
        for i in range(3000):
            assert client.read().body == b"%05d" % i


def test_a_draining_worker_answers_an_upgrade_503() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await ws_echo_once(scope, receive, send)
        else:
            await echo_app(scope, receive, send)

    with serving(app, drain_idle_window=5.0) as srv, Client(srv.port) as client:
        assert client.get("/").status == 200
        drained = srv.drain(10)
        client.send(UPGRADE)  # on the idle keep-alive connection, within the drain window
        assert client.read().status == 503
        assert client.closed_by_server()
        drained.result(10)


def test_a_head_request_whose_app_fails_gets_the_500_head_without_a_body() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise RuntimeError("boom")

    with serving(app) as srv, Client(srv.port) as client:
        client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = client.read(head=True)
        assert response.status == 500 and response.headers["connection"] == "close"
        assert client.file.read() == b""  # nothing after the head: the connection closes
        with Client(srv.port) as other:
            assert other.get("/").body == b"Internal Server Error\n"  # a GET still gets the body


def _segments_received(sock: socket.socket) -> int:
    """tcpi_segs_in of a Linux TCP socket: the segments it has received, the handshake's included."""
    return int.from_bytes(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)[140:144], "little")


@pytest.mark.parametrize("size", [5, 16 * 1024, 300 * 1024])
def test_the_last_response_on_a_connection_and_its_fin_arrive_together(size: int) -> None:
    # The response the server closes after is corked: its last bytes and the FIN share a segment, which
    # spares a packet each way (the FIN would otherwise follow alone, and be acknowledged alone).
    body = b"x" * size
    with serving(ok(body)) as srv:
        for request in (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                sock.sendall(request)
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
                assert received.endswith(b"\r\n\r\n" + body) and b"connection: close" in received
                if size < 60 * 1024:  # one segment on loopback (MSS 65,483): the SYN-ACK, the ACK of the
                    assert _segments_received(sock) == 3  # request, and the response with the FIN; 4 uncorked
        with Client(srv.port) as client:  # keep-alive responses are not held back
            for _ in range(3):
                response = client.get("/")
                assert response.status == 200 and response.body == body
