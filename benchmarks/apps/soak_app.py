"""The ASGI app the soak (`python -m benchmarks.soak`) serves: a few request shapes a real service has.

    GET  /                 -> 200 "ok\\n" (content-length)
    GET  /cpu?n=K          -> 200, the hex SHA-256 after K chained rounds (default 2000, about half a ms)
    GET  /stream?kb=K      -> 200, K KiB streamed as 16 KiB chunks (chunked framing), byte i is i % 251
    POST /echo             -> 200, the request body sent back (content-length)

Every response carries `x-worker-pid`, so a client can tell which worker served it (and which one it lost).
"""

import hashlib
import os

PID = str(os.getpid()).encode()
CHUNK = 16384
PATTERN = bytes(i % 251 for i in range(251 * 67))  # a chunk from any offset mod 251


def chunk_at(offset: int, size: int) -> bytes:
    """The streamed body's bytes from `offset` (byte i of the body is i % 251)."""
    start = offset % 251
    return PATTERN[start:start + size]


def burn(rounds: int) -> bytes:
    digest = b"prun"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest


def _query(scope: dict, name: bytes, default: int) -> int:
    for pair in scope.get("query_string", b"").split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name and value.isdigit():
            return int(value)
    return default


def _head(status: int, length: int | None = None) -> dict:
    headers = [(b"content-type", b"application/octet-stream"), (b"x-worker-pid", PID)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        parts = []
        more = True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(parts)
        await send(_head(200, len(body)))
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":
        total = _query(scope, b"kb", 256) * 1024
        await send(_head(200))
        sent = 0
        while sent < total:
            size = min(CHUNK, total - sent)
            await send({"type": "http.response.body", "body": chunk_at(sent, size), "more_body": True})
            sent += size
        await send({"type": "http.response.body", "body": b""})
    elif path == "/cpu":
        body = burn(_query(scope, b"n", 2000)).hex().encode()
        await send(_head(200, len(body)))
        await send({"type": "http.response.body", "body": body})
    elif path == "/":
        await send(_head(200, 3))
        await send({"type": "http.response.body", "body": b"ok\n"})
    else:
        await send(_head(404, 0))
        await send({"type": "http.response.body", "body": b""})
