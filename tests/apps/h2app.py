"""The apps tests/test_http2.py serves over HTTP/2 (and HTTP/1.1, to compare)."""

import asyncio
import hashlib

running = 0
most = 0
disconnects = 0


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    global running, most, disconnects
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    headers = [(b"content-type", b"text/plain")]
    if path == "/echo":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
            await asyncio.sleep(0)
        body = f"{size} {digest.hexdigest()}".encode()
    elif path == "/slow":
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(float(scope["query_string"] or b"2"))
        finally:
            running -= 1
        body = b"slow"
    elif path == "/most":
        body = str(most).encode()
    elif path == "/wait-disconnect":
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnects += 1
        return
    elif path.endswith("/client"):  # (with --root-path, path begins with it, as in uvicorn)
        body = f"{scope['client'][0]} {scope['scheme']} {scope['root_path']!r} {path}".encode()
    elif path == "/disconnects":
        body = str(disconnects).encode()
    elif path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
        await send({"type": "http.response.body", "body": b"with trailers", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": False})
        return
    elif path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(16):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/fail":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("broken mid-response")
    else:
        body = " ".join((scope["http_version"], scope["method"], path, scope["scheme"],
                         dict(scope["headers"]).get(b"host", b"").decode())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    if path == "/echo":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part{i};".encode() for i in range(3))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['SERVER_PROTOCOL']} {environ['REQUEST_METHOD']} {path}".encode()]
