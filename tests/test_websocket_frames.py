"""RFC 6455 framing as prun reads it (runtime/http/wsframes.py), from a raw socket against an in-process server.

What a client sees: each protocol error fails the connection with its close code and then the server's end
of file; fragmented messages (control frames between fragments, UTF-8 split anywhere) arrive whole; the
bounds of a message (size, fragments) close with 1009; invalid UTF-8 closes with 1007 as soon as it is sent
(Autobahn 6.4.1, 6.4.2), and a close between two fragments is echoed (Autobahn 7.1.5).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from prun.runtime.http.wsframes import MAX_FRAGMENTS
from tests.test_http_support import ServerThread, serving
from tests.ws_wire import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawWebSocket, close_payload, frame

MAX_SIZE = 65536


class Echo:
    """An ASGI app echoing every message, which records each disconnect's code."""

    def __init__(self) -> None:
        self.disconnects: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message["code"])
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ServerThread, Echo]]:
    app = Echo()
    with serving(app, ws_max_size=MAX_SIZE, ws_ping_interval=0) as srv:
        yield srv, app


def ws(server: tuple[ServerThread, Echo]) -> RawWebSocket:
    return RawWebSocket(server[0].port)


def failed_with(client: RawWebSocket, code: int) -> str:
    """The connection was failed with `code`: the close frame, then the server's end of file; the reason."""
    got, reason = client.read_close()
    assert got == code, (got, reason)
    assert client.closed_by_server()
    return reason


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param([frame(TEXT, b"hi", masked=False)], 1002, id="unmasked"),
        pytest.param([frame(TEXT, b"hi", rsv=0x40)], 1002, id="rsv1-without-deflate"),
        pytest.param([frame(BINARY, b"hi", rsv=0x20)], 1002, id="rsv2"),
        pytest.param([frame(0x3, b"hi")], 1002, id="opcode-3"),
        pytest.param([frame(0xB)], 1002, id="opcode-11"),
        pytest.param([frame(PING, b"p" * 126)], 1002, id="control-frame-too-long"),
        pytest.param([frame(PING, b"p", fin=False)], 1002, id="fragmented-ping"),
        pytest.param([frame(CONT, b"x")], 1002, id="continuation-without-a-message"),
        pytest.param([frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002, id="text-inside-a-message"),
        pytest.param([frame(CLOSE, b"\x03")], 1002, id="close-payload-of-one-byte"),
        pytest.param([frame(CLOSE, close_payload(1005))], 1002, id="close-code-1005"),
        pytest.param([frame(CLOSE, close_payload(999))], 1002, id="close-code-999"),
        pytest.param([frame(CLOSE, close_payload(1000) + b"\xff")], 1007, id="close-reason-not-utf8"),
        pytest.param([frame(TEXT, b"caf\xc3")], 1007, id="text-ending-mid-character"),
        pytest.param([frame(TEXT, b"\xed\xa0\x80")], 1007, id="text-with-a-surrogate"),
        pytest.param([frame(BINARY, b"y" * (MAX_SIZE + 1))], 1009, id="frame-over-max-size"),
        pytest.param([frame(BINARY, b"y" * 40000, fin=False), frame(CONT, b"y" * 30000)], 1009,
                     id="fragments-over-max-size"),
        pytest.param([frame(TEXT, b"", fin=False)] + [frame(CONT, fin=False)] * MAX_FRAGMENTS, 1009, id="too-many-empty-fragments"),
    ],
)
def test_a_protocol_error_or_a_bound_fails_the_connection_with_its_code(
    server: tuple[ServerThread, Echo], frames: list[bytes], code: int
) -> None:
    with ws(server) as client:
        client.send(*frames)
        failed_with(client, code)
    assert server[0].wait_no_connections(5)


def test_an_oversize_frame_is_refused_from_its_header_before_its_payload(server: tuple[ServerThread, Echo]) -> None:
    with ws(server) as client:
        client.send(frame(BINARY, b"y" * (MAX_SIZE + 1))[:14])  # the header and the mask, no payload yet
        assert "over 65536 bytes" in failed_with(client, 1009)


def test_too_many_fragments_is_1009_as_uvicorn_says_it(server: tuple[ServerThread, Echo]) -> None:
    with ws(server) as client:
        client.send(frame(BINARY, b"a", fin=False), *[frame(CONT, b"a", fin=False)] * MAX_FRAGMENTS)
        assert failed_with(client, 1009) == "too many fragments"


def test_a_message_of_max_fragments_arrives_whole(server: tuple[ServerThread, Echo]) -> None:
    with ws(server) as client:
        client.send(frame(BINARY, b"", fin=False), *[frame(CONT, b"%d," % i, fin=False) for i in range(MAX_FRAGMENTS - 2)],
                    frame(CONT, b"end"))
        assert client.read_frame() == (BINARY, b"".join(b"%d," % i for i in range(MAX_FRAGMENTS - 2)) + b"end")


def test_fragments_with_control_frames_between_and_utf8_split_anywhere_arrive_whole(
    server: tuple[ServerThread, Echo],
) -> None:
    text = "héllo wörld ✓ 𝄞".encode()
    with ws(server) as client:
        for cut in range(1, len(text)):
            client.send(frame(TEXT, text[:cut], fin=False), frame(PING, b"between"), frame(CONT, text[cut:]))
            assert client.read_frame() == (PONG, b"between")
            assert client.read_frame() == (TEXT, text)


def test_frames_split_across_reads_at_every_byte_are_read(server: tuple[ServerThread, Echo]) -> None:
    data = frame(TEXT, b"a" * 200) + frame(BINARY, b"b" * 70000)  # a 16-bit and a 64-bit length
    srv, _ = server
    with serving(Echo(), ws_max_size=100000, ws_ping_interval=0) as big, RawWebSocket(big.port) as client:
        for cut in (1, 2, 3, 5, 8, 9, 150, 207, 208, 209, 210, 214, 218, 219, len(data) - 1):
            client.send(data[:cut])
            client.send(data[cut:])
            assert client.read_frame() == (TEXT, b"a" * 200)
            assert client.read_frame() == (BINARY, b"b" * 70000)
    assert srv.wait_no_connections(5)


@pytest.mark.parametrize(("first", "second", "third"), [
    pytest.param(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", b"\xf4\x90\x80\x80", b"edited", id="6.4.1"),
    pytest.param(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4", b"\x90", b"\x80\x80edited", id="6.4.2"),
])
def test_invalid_utf8_in_an_open_text_message_closes_1007_as_soon_as_it_arrives(
    server: tuple[ServerThread, Echo], first: bytes, second: bytes, third: bytes
) -> None:
    """Autobahn 6.4.1 and 6.4.2: the first fragment is valid (a ping after it is answered: the connection
    goes on), the second makes the text invalid: 1007 before the third is sent."""
    with ws(server) as client:
        client.send(frame(TEXT, first, fin=False), frame(PING, b"still open?"))
        assert client.read_frame() == (PONG, b"still open?")
        client.send(frame(CONT, second, fin=False))
        failed_with(client, 1007)


def test_invalid_utf8_in_the_first_fragment_closes_at_once(server: tuple[ServerThread, Echo]) -> None:
    with ws(server) as client:
        client.send(frame(TEXT, b"ok\xff", fin=False))
        failed_with(client, 1007)


def test_a_close_between_two_fragments_is_echoed_1000() -> None:
    """Autobahn 7.1.5: fragment, close, fragment: control frames may come between fragments; the close is
    answered with the client's code and the message left incomplete is dropped."""
    app = Echo()  # a server of its own: another test's disconnect, reaching the shared app late, is not this one's
    with serving(app, ws_max_size=MAX_SIZE, ws_ping_interval=0) as srv:
        with RawWebSocket(srv.port) as client:
            client.send(frame(TEXT, b"fragment1", fin=False), frame(CLOSE, close_payload(1000)),
                        frame(CONT, b"fragment2"))
            assert client.read_close() == (1000, "")
            assert client.closed_by_server()
        assert srv.wait_no_connections(5)
    assert app.disconnects == [1000]


def test_an_app_may_send_any_bytes_like_object() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": bytearray(b"bytearray")})
        await send({"type": "websocket.send", "bytes": memoryview(b"memoryview " * 20)})
        await send({"type": "websocket.close", "code": 4000})

    with serving(app) as srv, RawWebSocket(srv.port) as client:
        assert client.read_frame() == (BINARY, b"bytearray")
        assert client.read_frame() == (BINARY, b"memoryview " * 20)
        assert client.read_frame() == (CLOSE, b"\x0f\xa0")
