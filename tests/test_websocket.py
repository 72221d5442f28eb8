"""WebSocket (ASGI websocket scope) against real prun masters, with the websockets client library."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
import time
import urllib.request

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support import wait_until


@pytest.fixture(scope="module")
def served():  # type: ignore[no-untyped-def]
    """One master for the tests that do not restart it: small limits so that they show quickly."""
    from tests.support import Prun

    master = Prun("wsapp:app", "-i", "1", "-b", "127.0.0.1:0", "--ws-max-size", "65536",
                  "--ws-ping-interval", "1", "--ws-ping-timeout", "1", "--ws-max-queue", "4",
                  "--health", "127.0.0.1:0")
    try:
        port = master.wait_ready()
        yield master, port
    finally:
        master.cleanup()


def url(port: int, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def test_echo_text_and_bytes_subprotocol_headers_and_permessage_deflate(served):
    master, port = served
    with connect(url(port, "/echo"), subprotocols=["chat", "other"], open_timeout=5) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers["x-served-by"] in {str(p) for p in master.workers()}
        assert ws.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"
        big = "x" * 60000  # compressed on the wire, under --ws-max-size once inflated
        ws.send(big)
        assert ws.recv(timeout=5) == big
        ws.send(["frag", "ment", "ed"])  # one message in three frames
        assert ws.recv(timeout=5) == "fragmented"
    with connect(url(port, "/echo"), compression=None, open_timeout=5) as ws:
        assert "sec-websocket-extensions" not in ws.response.headers
        assert ws.subprotocol is None
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"
    # plain HTTP on the same listener is untouched
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() == b"plain"


def test_close_codes_both_ways(served):
    master, port = served
    with connect(url(port, "/echo"), open_timeout=5) as ws:
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        assert closed.value.rcvd.reason == "asked"
    mark = master.mark()
    with connect(url(port, "/echo"), open_timeout=5) as ws:
        ws.close(code=4321, reason="bye")
    master.wait_for(r"disconnect 4321", start=mark)  # the app's websocket.disconnect carries the code
    with connect(url(port, "/crash"), open_timeout=5) as ws, pytest.raises(ConnectionClosed) as crashed:
        ws.recv(timeout=5)
    assert crashed.value.rcvd is not None and crashed.value.rcvd.code == 1011
    master.wait_for(r"RuntimeError: the app failed after accepting", start=mark)


def test_denial_response_and_close_before_accept(served):
    _, port = served
    with pytest.raises(InvalidStatus) as denied:
        connect(url(port, "/deny"), open_timeout=5)
    response = denied.value.response
    assert response.status_code == 401 and response.body == b"no entry"
    assert response.headers["content-type"] == "text/plain"
    with pytest.raises(InvalidStatus) as refused:
        connect(url(port, "/refuse"), open_timeout=5)
    assert refused.value.response.status_code == 403


def test_a_message_over_ws_max_size_closes_with_1009(served):
    _, port = served
    with connect(url(port, "/echo"), compression=None, max_size=None, open_timeout=5) as ws:
        ws.send(b"y" * 65537)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_a_compressed_message_inflating_past_ws_max_size_closes_with_1009(served):
    """permessage-deflate bombs: 16 MiB of zeros (about 16 KiB on the wire) in one frame, and two fragments
    under --ws-max-size each (64 KiB) but not together: inflated only up to what the message may still hold."""
    master, port = served
    (pid,) = master.workers()
    with connect(url(port, "/echo"), open_timeout=5) as ws:  # (the worker imports the WebSocket modules once)
        ws.send("warm")
        assert ws.recv(timeout=5) == "warm"
    before = psutil.Process(pid).memory_info().rss
    for message in (b"\0" * (16 << 20), [b"\0" * 40000, b"\0" * 40000]):
        with connect(url(port, "/echo"), max_size=None, open_timeout=5) as ws:
            assert ws.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            with pytest.raises(ConnectionClosed) as closed:  # (the close may come while the client still sends)
                ws.send(message)
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    grown = psutil.Process(pid).memory_info().rss - before
    print(f"deflate bombs: the worker grew {grown / 2**20:.1f} MiB")
    assert grown < 8 << 20, f"the worker grew {grown >> 20} MiB"


def handshake(port: int, version: str = "13") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_dead_peer_that_never_answers_pings_is_closed(served):
    master, port = served
    sock = handshake(port)
    started = time.monotonic()
    data = read_all(sock)  # never answers: the server pings, waits, then closes
    sock.close()
    assert data.startswith(b"HTTP/1.1 101")
    assert b"\x88" in data  # the close frame (1011) the server sent before dropping the connection
    assert time.monotonic() - started < 8
    master.wait_for(r"closed a WebSocket from 127\.0\.0\.1:\d+: no pong for 1 s")


def test_an_unsupported_version_is_answered_426_and_logged_once(served):
    master, port = served
    sock = handshake(port, version="8")
    data = read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 426") and b"Sec-WebSocket-Version: 13" in data
    master.wait_for("unsupported Sec-WebSocket-Version")  # the worker writes it after the answer
    sock = handshake(port, version="7")
    assert read_all(sock).startswith(b"HTTP/1.1 426")
    sock.close()
    seen = len(master.lines)
    sock = handshake(port, version="13")  # then a connection that logs a line: the second 426's would be before it
    sock.close()
    master.wait_for("disconnect 1006", start=seen)
    assert master.output.count("unsupported Sec-WebSocket-Version") == 1  # logged once


def status(master) -> dict:  # type: ignore[no-untyped-def]
    health = int(master.wait_for(r"health endpoint on http://\S+:(\d+)/").group(1))
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{health}/status", timeout=5).read())


def test_a_slow_reader_blocks_the_apps_send_and_memory_stays_bounded(served):
    master, port = served
    (pid,) = master.workers()
    before = psutil.Process(pid).memory_info().rss
    mark = master.mark()
    ws = connect(url(port, "/flood"), compression=None, max_size=None, open_timeout=5)
    try:
        master.wait_for(r"flood sent 16", start=mark)
        wait_until(lambda: status(master)["workers"][0]["connections"] >= 1, what="the WebSocket counted as open")
        sent = [int(m) for m in _flood_counts(master, mark)]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            later = _flood_counts(master, mark)
            assert len(later) <= len(sent) + 1, "the app's send did not block on a client that reads nothing"
            time.sleep(0.2)
        grown = psutil.Process(pid).memory_info().rss - before
        print(f"worker grew {grown / 2**20:.1f} MiB; flood counts {_flood_counts(master, mark)}")
        assert grown < 80 * 1024 * 1024, f"the worker grew {grown >> 20} MiB"
        assert max(int(m) for m in _flood_counts(master, mark)) < 200  # 200 MiB were never buffered
    finally:
        ws.socket.close()


def _flood_counts(master, mark: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [line.rpartition(" ")[2] for line in master.lines[mark:] if "flood sent" in line]


def test_fastapi_websocket_route_end_to_end(prun):
    master = prun("wsfastapi:app", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    with connect(url(port, "/chat/lobby"), open_timeout=5) as ws:
        ws.send(json.dumps({"n": 1}))
        answer = json.loads(ws.recv(timeout=5))
        assert answer["room"] == "lobby" and answer["echo"] == {"n": 1}
        assert answer["pid"] in master.workers()
    master.wait_for(r"fastapi disconnect 1000")
    with pytest.raises(InvalidStatus) as missing:  # no such route: FastAPI denies the handshake
        connect(url(port, "/nowhere"), open_timeout=5)
    assert missing.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as denied:  # Starlette's send_denial_response (websocket.http.response)
        connect(url(port, "/private"), open_timeout=5)
    assert denied.value.response.status_code == 418 and denied.value.response.body == b"members only"
    assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()) == {"served": "http"}


@pytest.mark.parametrize("cause", ["ws-none", "no-library"])
def test_a_refused_upgrade_gets_400_and_one_line_saying_why(prun, tmp_path, cause):
    if cause == "ws-none":
        args, env, why = ["--ws", "none"], None, "WebSocket is off (--ws none)"
    else:
        # The worker cannot import websockets (as after `pip install prun-cluster` without the [ws] extra):
        # sys.modules["websockets"] = None makes every import and find_spec of it fail.
        (tmp_path / "sitecustomize.py").write_text('import sys\nsys.modules["websockets"] = None\n')
        path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
        args, env, why = [], {"PYTHONPATH": path}, "the websockets library is not installed (pip install 'prun-cluster[ws]')"
    master = prun("wsapp:app", "-b", "127.0.0.1:0", *args, env=env)
    port = master.wait_ready()
    for _ in range(2):
        with pytest.raises(InvalidStatus) as refused:
            connect(url(port, "/echo"), open_timeout=5)
        assert refused.value.response.status_code == 400
    assert master.output.count("refused a WebSocket upgrade") == 1
    assert f"refused a WebSocket upgrade: {why}" in master.output
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() == b"plain"


class Chatter(threading.Thread):
    """A client that keeps one WebSocket open, sends numbered messages and reconnects when closed.

    `acked` holds every number the server echoed; a number is resent on the next connection until it is.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: list[int] = []
        self.gens: list[str] = []  # the generation serving each connection, in order
        self.closes: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.next = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with connect(url(self.port, "/echo"), open_timeout=10) as ws:
                    ws.send("who")
                    self.gens.append(ws.recv(timeout=10).rpartition(" gen ")[2])
                    while not self.stop.is_set():
                        ws.send(str(self.next))
                        assert ws.recv(timeout=10) == str(self.next)
                        self.acked.append(self.next)
                        self.next += 1
                        self.stop.wait(0.05)
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else 1006)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(exc))
                return


def test_fifty_websockets_across_a_hup_see_1012_and_reconnect_to_the_new_generation(prun):
    master = prun("wsapp:app", "-i", "2", "-b", "127.0.0.1:0", "--graceful-timeout", "10")
    port = master.wait_ready()
    clients = [Chatter(port) for _ in range(50)]
    for client in clients:
        client.start()
    try:
        wait_until(lambda: all(len(c.acked) >= 2 for c in clients), timeout=30, what="50 chatting clients")
        assert all(c.gens == ["1"] for c in clients)
        master.reload(r"reload complete: 2 workers on gen 2")
        wait_until(lambda: all(len(c.gens) >= 2 and len(c.acked) >= 5 for c in clients) or any(c.errors for c in clients),
                   timeout=30, what="every client back, on the new generation")
    finally:
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(15)
    for client in clients:
        assert not client.errors, client.errors
        assert client.closes[0] == 1012, client.closes
        assert client.gens[:2] == ["1", "2"], client.gens
        assert client.acked == list(range(len(client.acked)))  # every acknowledged message, in order
    master.wait_for(r"lifespan shutdown with 0 WebSockets open")


def test_term_closes_websockets_with_1001_before_the_lifespan_shutdown(prun):
    master = prun("wsapp:app", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    with connect(url(port, "/echo"), open_timeout=5) as ws:
        ws.send("who")
        ws.recv(timeout=5)
        master.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert master.wait_exit() == 0
    lines = master.output.splitlines()
    disconnect = next(i for i, line in enumerate(lines) if "disconnect 1001" in line)
    shutdown = next(i for i, line in enumerate(lines) if "lifespan shutdown with 0 WebSockets open" in line)
    assert disconnect < shutdown
