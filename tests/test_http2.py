"""HTTP/2 in real prun masters: prior knowledge and ALPN on the HTTP/1.1 port, ASGI and WSGI streams, bodies
with flow control, trailers, http.disconnect on RST_STREAM, the limits, reloads that lose no stream, and the
bounds against HTTP/2 attacks, each checked from the client's side (frames on a socket, curl, h2load, httpx).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame

from tests.h2_wire import PREFACE, H2Load, H2Wire
from tests.support import running, wait_until

CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")
if H2LOAD is None:  # pragma: no cover
    raise RuntimeError("the HTTP/2 tests load prun with h2load: apt-get install nghttp2-client")


# The HTTP/2 protocol libraries prun serves with (--http2-engine): each test taking `engine` runs on both.
ENGINES = ["h2", "zttp"] if importlib.util.find_spec("zttp") is not None else ["h2"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(prun, engine: str, *args: str):  # type: ignore[no-untyped-def]
    master = prun("h2app:app", "-b", "127.0.0.1:0", "--http2-engine", engine, *args)
    return master, master.wait_ready()


def test_prior_knowledge_and_http11_on_one_port(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    wire = H2Wire(port)
    response = wire.get("/hello?x=1")
    assert response.status == 200
    assert response.body == f"2 GET /hello http 127.0.0.1:{port}".encode()  # :authority becomes host
    assert response.header(b"date") and response.header(b"server") == b"prun"
    assert httpx.get(f"http://127.0.0.1:{port}/hello").text == f"1.1 GET /hello http 127.0.0.1:{port}"
    with httpx.Client(http1=False, http2=True) as client:  # httpx: HTTP/2 with prior knowledge
        reply = client.get(f"http://127.0.0.1:{port}/x")
        assert reply.http_version == "HTTP/2" and reply.text.startswith("2 GET /x")
    assert CURL is not None
    out = subprocess.run([CURL, "-s", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/curl"],
                         capture_output=True, text=True, timeout=10).stdout
    assert out.startswith("2 GET /curl")
    # Upgrade: h2c (curl --http2 in clear text) is not honoured: answered over HTTP/1.1 (RFC 9113 deprecates it).
    verbose = subprocess.run([CURL, "-sv", "--http2", f"http://127.0.0.1:{port}/up"], capture_output=True,
                             text=True, timeout=10)
    assert verbose.stdout.startswith("1.1 GET /up") and "< HTTP/1.1 200" in verbose.stderr
    assert "101" not in verbose.stderr


def test_a_preface_split_anywhere_is_read_whole(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    for cut in range(1, len(PREFACE) + 1):  # the preface and SETTINGS in two sends, cut after each preface byte
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            wire = H2Wire(port, sock=sock, preface=False)
            wire.conn.initiate_connection()
            opening = wire.conn.data_to_send()
            sock.sendall(opening[:cut])
            sock.sendall(opening[cut:])
            assert wire.get(f"/cut{cut}").status == 200, cut


def test_tls_alpn_h2_and_http11(prun, tmp_path: Path, engine: str) -> None:  # type: ignore[no-untyped-def]
    from tests.test_tls import Pki

    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    pki = Pki(pki_dir)
    cert, key = pki.issue("server", 2)
    master = prun("h2app:app", "-b", "127.0.0.1:0", "--http2-engine", engine, "--certfile", str(cert), "--keyfile", str(key), "-i", "2",
                  "--balance", "shared")
    port = master.wait_ready()
    with httpx.Client(http2=True, verify=pki.client_context()) as client:
        reply = client.get(f"https://127.0.0.1:{port}/tls")
        assert reply.http_version == "HTTP/2" and reply.text.startswith("2 GET /tls https")
    with httpx.Client(verify=pki.client_context()) as client:  # a client offering http/1.1 only
        reply = client.get(f"https://127.0.0.1:{port}/tls")
        assert reply.http_version == "HTTP/1.1" and reply.text.startswith("1.1 GET /tls https")
    context = pki.client_context()
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert tls.selected_alpn_protocol() == "h2"
    wire = H2Wire(port, sock=tls)
    assert wire.get("/raw").body.startswith(b"2 GET /raw https")
    wire.close()


def test_h2load_streams_and_the_http11_hot_path_beside(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    out = subprocess.run([str(H2LOAD), "-n", "4000", "-c", "4", "-m", "20", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "4000 succeeded, 0 failed, 0 errored" in out, out
    out = subprocess.run([str(H2LOAD), "-n", "200", "-c", "2", "-m", "10", "-d", str(Path(sys.executable)),
                          f"http://127.0.0.1:{port}/echo"], capture_output=True, text=True, timeout=60).stdout
    assert "200 succeeded, 0 failed" in out, out


def test_request_body_streams_with_flow_control(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    body = os.urandom(3 * 1024 * 1024)  # 48 times the stream's window: only WINDOW_UPDATEs let it through
    wire = H2Wire(port)
    sids = [wire.request("/echo", method="POST", body=body[: 1024 * 1024 * (i + 1)]) for i in range(2)]
    for i, sid in enumerate(sids):
        size = 1024 * 1024 * (i + 1)
        assert wire.response(sid, 30).body == f"{size} {hashlib.sha256(body[:size]).hexdigest()}".encode()
    # A response bigger than the client's window arrives whole as the client acknowledges it.
    response = wire.get("/big", timeout=30)
    assert response.status == 200 and response.body == b"x" * (16 * 65536)


def test_trailers_disconnect_and_an_app_failing_mid_response(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    wire = H2Wire(port)
    response = wire.get("/trailers")
    assert response.body == b"with trailers" and response.trailers == [(b"x-checksum", b"abc")]
    sid = wire.request("/wait-disconnect", method="POST", end=False)  # a body that never ends
    wire.conn.reset_stream(sid)
    wire.flush()
    wait_until(lambda: H2Wire(port).get("/disconnects").body == b"1", what="http.disconnect after RST_STREAM")
    failed = wire.get("/fail")
    assert failed.reset == ErrorCodes.INTERNAL_ERROR and failed.body == b"part"
    assert wire.get("/after").status == 200  # the connection goes on
    master.wait_for(r"broken mid-response")


def test_wsgi_streams_on_the_thread_pool(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master = prun("h2app:wsgi", "-b", "127.0.0.1:0", "--http2-engine", engine, "--interface", "wsgi")
    port = master.wait_ready()
    wire = H2Wire(port)
    assert wire.get("/w").body == b"HTTP/2 GET /w"
    body = os.urandom(512 * 1024)
    sids = [wire.request("/echo", method="POST", body=body) for _ in range(3)]
    expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    assert [wire.response(sid, 30).body for sid in sids] == [expected] * 3
    assert wire.get("/stream").body == b"part0;part1;part2;"


def test_limits_per_stream(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine, "--limit-request-body", "1000", "--limit-request-line", "100",
                         "--limit-request-header-size", "4000")
    wire = H2Wire(port)
    assert wire.get("/" + "a" * 200).status == 414
    assert wire.get("/x", headers=[("x-big", "v" * 5000)]).status == 431  # over the limit, under the HPACK bound
    # Refused on its content-length, before the app, while the body is still coming.
    assert wire.get("/echo", method="POST", body=b"b" * 5000, headers=[("content-length", "5000")]).status == 413
    assert wire.get("/echo", method="POST", body=b"b" * 3000).status == 413  # no length: counted as it comes
    assert wire.get("/ok").status == 200  # the connection serves on


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_reloads_lose_no_stream(prun, balance: str, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine, "-i", "2", "--balance", balance)
    with H2Load(port, clients=4, streams=8) as load:
        wait_until(lambda: load.ok >= 200, what="streams before the reloads")
        for _ in range(4):
            mark = load.ok
            master.reload()
            wait_until(lambda mark=mark: load.ok >= mark + 200, what="streams after a reload")
    assert load.failed == 0, load.errors
    assert load.connections > 4  # the clients were sent away by GOAWAY and came back to the new workers


def goaway_code(wire: H2Wire, timeout: float = 10.0) -> int | None:
    event = wire.wait_goaway(timeout)
    return None if event is None else event.error_code


def test_rapid_reset_is_bounded(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine, "--http2-max-streams", "20")
    wire = H2Wire(port)
    for _ in range(600):
        sid = wire.conn.get_next_available_stream_id()
        wire.conn.send_headers(sid, [(":method", "GET"), (":path", "/slow?3"), (":scheme", "http"),
                                     (":authority", "x")], end_stream=True)
        wire.conn.reset_stream(sid)
    wire.flush()
    assert goaway_code(wire) == ErrorCodes.ENHANCE_YOUR_CALM
    assert wire.wait_closed()
    other = H2Wire(port)
    assert other.get("/").status == 200  # the worker serves others meanwhile
    assert int(other.get("/most").body) <= 20  # never more apps running than --http2-max-streams


def test_continuation_flood_ends_in_goaway(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    wire = H2Wire(port)
    block = Encoder().encode([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")])
    frames = [HeadersFrame(1, data=block[:2]).serialize()]  # no END_HEADERS: CONTINUATION must follow
    frames += [ContinuationFrame(1, data=b"\x00" * 16000).serialize() for _ in range(200)]
    try:
        wire.send_raw(b"".join(frames))
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed before all of it was sent
    # h2 ends it at its 64th frame as a protocol error; zttp at 16 frames or 64 KB, as a flood.
    assert goaway_code(wire) == (ErrorCodes.PROTOCOL_ERROR if engine == "h2" else ErrorCodes.ENHANCE_YOUR_CALM)
    assert wire.wait_closed()
    assert H2Wire(port).get("/").status == 200


@pytest.mark.parametrize("frame", ["ping", "settings"])
def test_control_frame_floods_end_in_goaway(prun, frame: str, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    wire = H2Wire(port)
    one = PingFrame(0, opaque_data=b"12345678") if frame == "ping" else SettingsFrame(0)
    try:
        wire.send_raw(one.serialize() * 5000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert goaway_code(wire) == ErrorCodes.ENHANCE_YOUR_CALM
    assert wire.wait_closed()
    assert H2Wire(port).get("/").status == 200


def test_hpack_bomb_ends_in_goaway(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    wire = H2Wire(port)
    # A 4 KB header enters the dynamic table (index 62) with a request under the limits, then one header
    # block refers to it 1,000 times: 4 MB once decoded, from a 1 KB block.
    assert wire.get("/", headers=[("x-bomb", "b" * 4000)]).status == 200  # x-bomb is the newest entry: 62
    bomb = b"\x82\x84\x86" + b"\xbe" * 1000  # :method GET, :path /, :scheme http (static), then x-bomb 1,000 times
    wire.send_raw(HeadersFrame(3, data=bomb, flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert goaway_code(wire) == ErrorCodes.ENHANCE_YOUR_CALM
    assert H2Wire(port).get("/").status == 200


def test_too_many_concurrent_streams_end_in_goaway(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine, "--http2-max-streams", "10")
    wire = H2Wire(port)
    if engine == "h2":
        encoder = Encoder()
        frames = [HeadersFrame(2 * i + 1, data=encoder.encode([(":method", "GET"), (":path", "/slow?5"), (":scheme", "http"),
                                                               (":authority", "x")]),
                               flags=["END_HEADERS", "END_STREAM"]).serialize() for i in range(11)]
        wire.send_raw(b"".join(frames))  # the 11th is beyond SETTINGS_MAX_CONCURRENT_STREAMS
        assert goaway_code(wire) == ErrorCodes.PROTOCOL_ERROR  # h2 makes it a connection error
    else:
        # zttp's bound is its own (128): prun refuses the stream beyond --http2-max-streams, the others are
        # served. (Sent before the client read the server's SETTINGS, so the client does not hold the 11th back.)
        sids = [wire.request("/slow?2") for _ in range(11)]
        assert wire.response(sids[-1], timeout=5).reset == ErrorCodes.REFUSED_STREAM
        assert [wire.response(sid, timeout=15).body for sid in sids[:-1]] == [b"slow"] * 10
    assert H2Wire(port).get("/").status == 200

def test_a_window_held_shut_resets_the_stream(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine, "--timeout-write", "1")
    wire = H2Wire(port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})  # a reader that never opens its window
    sid = wire.request("/big")
    response = wire.response(sid, timeout=15)
    assert response.reset == ErrorCodes.CANCEL and response.body == b""
    master.wait_for(r"reset an HTTP/2 stream .* window stayed shut")
    assert H2Wire(port).get("/").status == 200


def test_a_body_the_app_does_not_read_is_held_back(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, engine)
    wire = H2Wire(port)
    sid = wire.request("/slow?1", method="POST", end=False)  # an app that sleeps and never reads its body
    sent, chunk = 0, b"b" * 16384
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
        window = min(wire.conn.local_flow_control_window(sid), len(chunk))
        if window <= 0:  # the server's windows are shut: read what it sends (a WINDOW_UPDATE would open them)
            wire.sock.settimeout(0.05)
            try:
                wire.read_once()
            except TimeoutError:
                pass
            continue
        wire.conn.send_data(sid, chunk[:window])
        wire.flush()
        sent += window
    # h2 holds the stream's window shut; on zttp (which acknowledges what it reads), the connection stops reading.
    assert sent < 1024 * 1024, sent
    assert wire.response(sid, timeout=15).status == 200  # answered without the rest of its body
    assert wire.get("/after").status == 200  # and the connection serves on


def test_a_connection_past_zttps_bound_of_streams_moves_on_without_losing_one(prun) -> None:  # type: ignore[no-untyped-def]
    if "zttp" not in ENGINES:  # pragma: no cover
        pytest.fail("zttp is in the test extra on Python 3.11 and later")
    master, port = start(prun, "zttp")
    with H2Load(port, clients=1, streams=10) as load:
        # zttp ends a connection after 4,096 streams: prun sends it away with GOAWAY from its 3,000th stream.
        wait_until(lambda: load.ok >= 7000, timeout=120, what="7,000 streams on one client")
    assert load.failed == 0, load.errors
    assert load.connections >= 3


def first_settings(port: int) -> dict[int, int]:
    """The settings of the first SETTINGS frame the server sends on a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize())
        data = b""
        while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
            chunk = sock.recv(65536)
            assert chunk, "closed before its SETTINGS"
            data += chunk
    assert data[3] == 0x4, "the server's first frame is not SETTINGS"
    payload = data[9:9 + int.from_bytes(data[:3], "big")]
    return {int.from_bytes(payload[i:i + 2], "big"): int.from_bytes(payload[i + 2:i + 6], "big")
            for i in range(0, len(payload), 6)}


def test_the_auto_engine_is_zttp_when_it_is_installed_else_h2(prun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Told apart by their first SETTINGS: zttp announces its own 128 concurrent streams (prun's 100 follows in a
    # second frame), h2 announces prun's 100.
    master = prun("h2app:app", "-b", "127.0.0.1:0")  # --http2-engine auto
    port = master.wait_ready()
    assert first_settings(port)[SettingCodes.MAX_CONCURRENT_STREAMS] == (128 if "zttp" in ENGINES else 100)
    assert H2Wire(port).get("/").status == 200
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['zttp'] = None\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    master = prun("h2app:app", "-b", "127.0.0.1:0", env=env)
    port = master.wait_ready()
    assert first_settings(port)[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert H2Wire(port).get("/").status == 200


def test_without_the_h2_library(prun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The library made unimportable in every process prun starts, as if the prun-cluster[http2] extra were missing.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['h2'] = None\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with running("h2app:app", "-b", "127.0.0.1:0", "--http", "2", env=env) as refused:
        assert refused.wait_exit() == 2
        assert refused.output.strip().splitlines() == [
            "prun: error: --http 2 needs the h2 library, which is not installed: pip install 'prun-cluster[http2]'"]
    master = prun("h2app:app", "-b", "127.0.0.1:0", env=env)  # --http auto: HTTP/1.1 only, quietly
    port = master.wait_ready()
    assert httpx.get(f"http://127.0.0.1:{port}/").text.startswith("1.1 GET")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PREFACE)
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    assert "HTTP/2" not in master.output and "h2 library" not in master.output
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['zttp'] = None\n")
    with running("h2app:app", "-b", "127.0.0.1:0", "--http2-engine", "zttp", env=env) as refused:
        assert refused.wait_exit() == 2
        assert refused.output.strip().splitlines() == [
            "prun: error: --http2-engine zttp needs the zttp library, which is not installed: "
            "pip install 'prun-cluster[zttp]'"]


FRAMEWORKS = [  # (tests/apps/frameworks.py): every one on h2, three of them on zttp too
    ("frameworks:fastapi_app", "asgi", "h2"),
    ("frameworks:starlette_app", "asgi", "h2"),
    ("frameworks:quart_app", "asgi", "h2"),
    ("frameworks:litestar_app", "asgi", "h2"),
    ("frameworks:flask_app", "wsgi", "h2"),
    ("frameworks:django_asgi", "asgi", "h2"),
    ("frameworks:django_wsgi", "wsgi", "h2"),
    ("frameworks:sanic_app", "asgi", "h2"),
    ("frameworks:falcon_asgi", "asgi", "h2"),
    ("frameworks:falcon_wsgi", "wsgi", "h2"),
    *[(target, interface, "zttp") for target, interface in (("frameworks:fastapi_app", "asgi"),
                                                            ("frameworks:flask_app", "wsgi"),
                                                            ("frameworks:django_asgi", "asgi")) if "zttp" in ENGINES],
]


@pytest.mark.parametrize(("target", "interface", "engine"), FRAMEWORKS,
                         ids=[f"{t.split(':')[1]}-{e}" for t, _, e in FRAMEWORKS])
def test_frameworks_answer_the_same_over_http11_and_http2(prun, target: str, interface: str, engine: str) -> None:  # type: ignore[no-untyped-def]
    master = prun(target, "-b", "127.0.0.1:0", "--interface", interface, "--http2-engine", engine,
                  env={"DJANGO_SETTINGS_MODULE": "frameworks"})
    port = master.wait_ready()
    url = f"http://127.0.0.1:{port}/items/7?q=x"
    h1 = httpx.get(url, headers={"x-token": "t"})
    with httpx.Client(http1=False, http2=True) as client:
        h2 = client.get(url, headers={"x-token": "t"})
        posted = client.post(url, content=b"payload" * 1000)
    assert h2.http_version == "HTTP/2" and h1.http_version == "HTTP/1.1"
    assert h1.status_code == 200 and json.loads(h1.content) == {"item": 7, "q": "x", "token": "t"}
    assert (h2.status_code, h2.headers.get("content-type"), h2.content) == (
        h1.status_code, h1.headers.get("content-type"), h1.content)
    assert posted.status_code == 200 and json.loads(posted.content) == {"item": 7, "size": 7000}


def test_http_1_serves_http11_only(prun) -> None:  # type: ignore[no-untyped-def]
    master, port = start(prun, "h2", "--http", "1")
    assert httpx.get(f"http://127.0.0.1:{port}/").text.startswith("1.1 GET")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PREFACE)  # prior knowledge is refused as any malformed HTTP/1.1 request
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


def test_proxy_headers_root_path_and_the_access_log_over_http2(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    """What HTTP/1.1 requests get from prun, HTTP/2 streams get too: the client and scheme a trusted proxy
    names, --root-path, and an access log line."""
    master, port = start(prun, engine, "--access-log", "common", "--root-path", "/api")
    forwarded = {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
    with httpx.Client(http1=False, http2=True) as client:
        reply = client.get(f"http://127.0.0.1:{port}/client", headers=forwarded)
    assert reply.http_version == "HTTP/2" and reply.text == "203.0.113.7 https '/api' /api/client"
    h1 = httpx.get(f"http://127.0.0.1:{port}/client", headers=forwarded)
    assert h1.text == reply.text
    master.wait_for(r'203\.0\.113\.7 - - \[[^]]+\] "GET /api/client HTTP/2" 200 ')  # the access log's line


def test_expect_100_continue_over_http2(prun, engine: str) -> None:  # type: ignore[no-untyped-def]
    """A client that asks for 100-continue gets it once the app reads the body, and only then sends it."""
    master, port = start(prun, engine)
    wire = H2Wire(port)
    sid = wire.request("/echo", "POST", headers=[("expect", "100-continue"), ("content-length", "5")], end=False)
    assert wire.wait(lambda: wire.responses[sid].informational == [100])
    assert wire.responses[sid].status == 0  # not the response yet: the app waits for the body
    wire.send_body(sid, b"hello")
    assert wire.wait(lambda: wire.responses[sid].ended)
    assert (wire.responses[sid].status, wire.responses[sid].body) == (
        200, f"5 {hashlib.sha256(b'hello').hexdigest()}".encode())
