"""The ASGI app shapes of the HTTP benchmark (`python -m benchmarks --shapes ...`), one attribute each.

    hello      hello world, no content-length (the server adds it)      (the app of the older results)
    hello_cl   hello world with an explicit content-length
    lifespan   hello_cl, and it answers the lifespan startup and shutdown events
    body16k    16 KB of text with its content-length
    json       a small JSON object, encoded per request, with its content-length
    hello_lists  hello_cl with its header pairs as lists, not tuples (lists cannot key prun's head
               cache; it turns them into tuples first): only run when named, to measure that cache

Headers are tuples, as most ASGI frameworks send them. Every app that is not `lifespan` returns at once on
a lifespan scope (the servers then go on without it, as with apps that do not use it).
"""

import json as _json

HELLO = b"Hello, world!"
TEXT = [(b"content-type", b"text/plain")]
TEXT_CL = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(HELLO))]
BODY16K = (b"0123456789abcdef" * 64 + b"\n") * 15 + b"x" * (16384 - 1025 * 15)
BODY16K_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY16K))]


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": HELLO})


async def hello_cl(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": TEXT_CL})
    await send({"type": "http.response.body", "body": HELLO})


async def hello_lists(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [[b"content-type", b"text/plain"], [b"content-length", b"13"]]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": HELLO})


async def lifespan(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": TEXT_CL})
    await send({"type": "http.response.body", "body": HELLO})


async def body16k(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": BODY16K_HEADERS})
    await send({"type": "http.response.body", "body": BODY16K})


async def json(scope, receive, send):
    if scope["type"] != "http":
        return
    body = _json.dumps({"message": "Hello, world!", "path": scope["path"], "id": 42}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
