"""The app every Python server runs in the cluster benchmarks.

    GET /         -> 200 "hello, world"
    GET /cpu      -> 200 after ROUNDS chained SHA-256 rounds (a few ms of CPU in one worker)
    GET /cpu?n=K  -> the same with K rounds

Every response carries `x-worker-pid`, so a client can count which worker served it, and an explicit
content-length, so keep-alive framing is the same on every server. Lifespan is answered so that servers
which log "startup complete" per worker do so.
"""

import hashlib
import os

ROUNDS = int(os.environ.get("BENCH_CPU_ROUNDS", "12000"))
PID = str(os.getpid()).encode()
HELLO = b"hello, world\n"


def _headers(body: bytes) -> list:
    return [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(body)).encode()),
        (b"x-worker-pid", PID),
    ]


def burn(rounds: int) -> bytes:
    digest = b"prun"
    sha256 = hashlib.sha256
    for _ in range(rounds):
        digest = sha256(digest).digest()
    return digest


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind != "http":
        return
    path = scope["path"]
    if path == "/cpu":
        rounds = ROUNDS
        query = scope.get("query_string", b"")
        if query.startswith(b"n="):
            rounds = int(query[2:])
        body = burn(rounds).hex().encode() + b"\n"
    else:
        body = HELLO
    await send({"type": "http.response.start", "status": 200, "headers": _headers(body)})
    await send({"type": "http.response.body", "body": body})
