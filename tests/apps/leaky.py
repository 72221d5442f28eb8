"""An ASGI app that leaks LEAK_KB (default 1024) of memory per request, and answers with its pid."""

import os

LEAK = int(os.environ.get("LEAK_KB", "1024")) * 1024
kept: list[bytes] = []


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    kept.append(os.urandom(16) * (LEAK // 16))  # written, so resident
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"leaky {os.getpid()}".encode()})
