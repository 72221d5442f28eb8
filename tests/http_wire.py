"""Raw HTTP/1.1 on the wire for the property and fuzz tests: requests as bytes, responses parsed strictly."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool
    chunks: list[int]  # chunk sizes when chunked

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", "Host: test"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif self.body or self.method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not self.chunked:
            return head + self.body
        out = [head]
        rest = self.body
        for size in self.chunks:
            if not rest:
                break
            part, rest = rest[:size], rest[size:]
            out.append(b"%x\r\n%b\r\n" % (len(part), part))
        if rest:
            out.append(b"%x\r\n%b\r\n" % (len(rest), rest))
        out.append(b"0\r\n\r\n")
        return b"".join(out)

    def expected(self) -> bytes:
        """What the echo app answers for this request."""
        return echo_line(self.method, self.target.partition("?")[0], self.body)


def echo_line(method: str, path: str, body: bytes) -> bytes:
    return f"{method} {path} {len(body)} {hashlib.sha1(body).hexdigest()[:12]}".encode()


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body; answers the echo line, streamed in two chunks for paths under /stream."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    data = echo_line(scope["method"], scope["raw_path"].decode("latin-1"), body)
    headers = [(b"content-type", b"text/plain"), (b"x-method", scope["method"].encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"].startswith("/stream"):
        await send({"type": "http.response.body", "body": data[:5], "more_body": True})
        await send({"type": "http.response.body", "body": data[5:]})
    else:
        await send({"type": "http.response.body", "body": data})


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
PATH = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/!$&'()*+,;=:@",
               max_size=30)


@st.composite
def requests(draw: Any) -> Request:
    method = draw(st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
    prefix = draw(st.sampled_from(["/", "/stream/"]))
    target = prefix + draw(PATH)
    if draw(st.booleans()):
        target += "?" + draw(PATH)
    names = draw(st.lists(TOKEN.filter(lambda n: n not in ("host", "content-length", "transfer-encoding",
                                                             "connection", "expect", "upgrade")), max_size=4))
    headers = [("X-" + name, draw(VALUE).strip()) for name in names]
    body = b""
    chunked = False
    chunks: list[int] = []
    if method in ("POST", "PUT", "PATCH"):
        body = draw(st.binary(max_size=3000))
        chunked = draw(st.booleans())
        chunks = draw(st.lists(st.integers(1, 1500), max_size=5))
    return Request(method, target, headers, body, chunked, chunks)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (any order, repeats allowed): the reads a server could see."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Malformed(AssertionError):
    """The server wrote bytes that are not a well-framed HTTP/1.1 response."""


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    """Every complete response in `data`, checked strictly; and what is left (an incomplete response)."""
    responses: list[Response] = []
    rest = data
    while rest:
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            if not rest.startswith(b"HTTP/1.1 "[: len(rest)]):
                raise Malformed(f"not a status line: {rest[:40]!r}")
            break
        lines = rest[:end].decode("latin-1").split("\r\n")
        version, _, status_reason = lines[0].partition(" ")
        if version != "HTTP/1.1" or not status_reason[:3].isdigit():
            raise Malformed(f"bad status line {lines[0]!r}")
        status = int(status_reason[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or name != name.strip() or not name:
                raise Malformed(f"bad header line {line!r}")
            if name.lower() in headers:
                raise Malformed(f"header {name!r} twice")
            headers[name.lower()] = value.strip()
        body_start = end + 4
        # The echo app names the method it answers: a response to HEAD has no body.
        head_only = headers.get("x-method") == "HEAD" or status < 200 or status in (204, 304)
        if "content-length" in headers and "transfer-encoding" in headers:
            raise Malformed("both Content-Length and Transfer-Encoding")
        if head_only:
            body, used = b"", 0
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if len(rest) - body_start < length:
                break
            body, used = rest[body_start : body_start + length], length
        elif headers.get("transfer-encoding") == "chunked":
            parsed = _dechunk(rest[body_start:])
            if parsed is None:
                break
            body, used = parsed
        else:
            if headers.get("connection") != "close":
                raise Malformed("a body framed by nothing on a keep-alive connection")
            body, used = rest[body_start:], len(rest) - body_start
        responses.append(Response(status, headers, body))
        rest = rest[body_start + used :]
    return responses, rest


def _dechunk(data: bytes) -> tuple[bytes, int] | None:
    parts = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(data[pos:end], 16)
        pos = end + 2
        if size == 0:
            if data[pos : pos + 2] != b"\r\n":
                return None if len(data) < pos + 2 else _bad("chunked body without its final CRLF")
            return b"".join(parts), pos + 2
        if len(data) < pos + size + 2:
            return None
        parts.append(data[pos : pos + size])
        if data[pos + size : pos + size + 2] != b"\r\n":
            _bad("a chunk not followed by CRLF")
        pos += size + 2


def _bad(message: str) -> Any:
    raise Malformed(message)


def wsgi_echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The echo app for WSGI: the same answer, with the body read from wsgi.input in pieces."""
    stream = environ["wsgi.input"]
    body = b""
    while piece := stream.read(1000):
        body += piece
    data = echo_line(environ["REQUEST_METHOD"], environ["PATH_INFO"], body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Method", environ["REQUEST_METHOD"])])
    if environ["PATH_INFO"].startswith("/stream"):
        return iter([data[:5], data[5:]])  # type: ignore[return-value]
    return [data]
