"""Properties of the request parser and framing, on raw bytes fed to the protocol in every possible split.

The protocol runs on a real uvloop loop with an in-memory transport (what it writes is collected), so
that thousands of request streams take seconds: the fuzz test against a real worker is test_http_fuzz.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prun.runtime.http import make_http_server
from prun.runtime.options import WorkerOptions
from tests.http_wire import Request, echo_app, parse_responses, requests, split

PROFILE = settings(max_examples=150, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Transport:
    """What the protocol needs of a transport; writes are collected, close ends the connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.proto: Any = None
        self.out = bytearray()
        self.paused = False
        self.eof = False
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.eof, "a write after the connection was closed"
        self.out += data

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.proto.connection_lost, None)

    abort = close


def serve_bytes(chunks: list[bytes], **options: Any) -> tuple[bytes, Any, Any, list[Any]]:
    """Feed `chunks` to one connection, as reads, honouring pause_reading; what it wrote, and its state."""
    loop = uvloop.new_event_loop()
    errors: list[Any] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        server = make_http_server(echo_app, "asgi", WorkerOptions(lifespan="off", **options), loop)
        proto = server.protocol()
        transport = Transport(loop)
        transport.proto = proto

        async def drive() -> None:
            proto.connection_made(transport)
            for chunk in chunks:
                for _ in range(10000):  # a paused reader is resumed once the server caught up
                    if not transport.paused or transport.closed:
                        break
                    await asyncio.sleep(0)
                assert not transport.paused or transport.closed, "reading paused and never resumed"
                if transport.closed or transport.eof:
                    break
                proto.data_received(chunk)
                await asyncio.sleep(0)
            for _ in range(50):
                await asyncio.sleep(0)

        loop.run_until_complete(drive())
        return bytes(transport.out), proto, server, errors
    finally:
        loop.close()


def answered_completely(proto: Any) -> None:
    """Nothing owed is left: no pipelined request waits while nothing is being answered."""
    if proto.closed or proto.lingering:
        return
    assert not proto.queue or proto.current is not None, "requests wait, but none is being answered"
    if proto.current is not None:  # the echo app answers as soon as it has the whole body
        assert not proto.current.body_complete, "a complete request was never answered"


@PROFILE
@given(st.lists(requests(), min_size=1, max_size=8), st.lists(st.integers(0, 100000), max_size=12))
def test_pipelined_requests_in_any_split_are_answered_in_order(reqs: list[Request], cuts: list[int]) -> None:
    data = b"".join(r.encode() for r in reqs)
    out, proto, server, errors = serve_bytes(split(data, cuts))
    assert not errors
    responses, rest = parse_responses(out)
    assert rest == b""
    assert [r.status for r in responses] == [200] * len(reqs)
    for req, resp in zip(reqs, responses):
        assert resp.body == (b"" if req.method == "HEAD" else req.expected())
    assert not proto.closed and proto.is_idle()
    assert server.shared.active == 0


@PROFILE
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=6))
def test_any_bytes_get_well_framed_answers_never_5xx_and_nothing_left_owed(data: bytes, cuts: list[int]) -> None:
    out, proto, server, errors = serve_bytes(split(data, cuts))
    assert not errors
    responses, rest = parse_responses(out)
    assert rest == b""
    assert all(r.status < 500 for r in responses)
    answered_completely(proto)


MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "dup"]), st.integers(0, 100000), st.binary(min_size=1, max_size=4)),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, extra in mutations:
        at = where % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] = extra[0]
        elif kind == "insert":
            out[at:at] = extra
        elif kind == "delete":
            del out[at : at + len(extra)]
        else:
            out[at:at] = out[at : at + 8 * len(extra)]
    return bytes(out)


@PROFILE
@given(st.lists(requests(), min_size=1, max_size=5), MUTATIONS, st.lists(st.integers(0, 100000), max_size=8))
def test_mutated_pipelines_are_answered_in_order_or_refused_never_5xx(
    reqs: list[Request], mutations: list[tuple[str, int, bytes]], cuts: list[int]
) -> None:
    data = mutate(b"".join(r.encode() for r in reqs), mutations)
    out, proto, server, errors = serve_bytes(split(data, cuts), limit_request_body=2000,
                                             limit_request_header_size=2000)
    assert not errors
    responses, rest = parse_responses(out)
    assert all(r.status < 500 for r in responses), [r.status for r in responses]
    refused = [i for i, r in enumerate(responses) if r.status >= 400]
    if refused:  # a refusal is the connection's last answer, and closes it
        assert refused == [len(responses) - 1]
        assert responses[-1].headers.get("connection") == "close"
        assert proto.closing
    answered_completely(proto)


REFUSED = st.sampled_from([
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 999999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 3000 + b"\r\n\r\n",
    b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"GET /\r\n\r\n",
])


@PROFILE
@given(st.lists(requests(), max_size=4), REFUSED, st.lists(requests(), max_size=3),
       st.lists(st.integers(0, 100000), max_size=8))
def test_requests_before_a_refused_one_are_answered_then_the_refusal_closes(
    before: list[Request], refused: bytes, after: list[Request], cuts: list[int]
) -> None:
    data = b"".join(r.encode() for r in before) + refused + b"".join(r.encode() for r in after)
    out, proto, server, errors = serve_bytes(split(data, cuts), limit_request_body=2000,
                                             limit_request_header_size=2000)
    assert not errors
    responses, rest = parse_responses(out)
    assert rest == b""
    assert [r.body for r in responses[: len(before)]] == [b"" if r.method == "HEAD" else r.expected() for r in before]
    assert len(responses) in (len(before), len(before) + 1)  # the refusal's own answer, unless a close came first
    if len(responses) > len(before):
        assert 400 <= responses[-1].status < 500
    assert responses[-1:] == [] or responses[-1].headers.get("connection") == "close"
    assert proto.closing
    answered_completely(proto)
