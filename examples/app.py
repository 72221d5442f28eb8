"""prun's demo app: an ASGI app that answers `hey`, like PM2's cluster-mode example.

    cd examples && prun app:server -i max
    curl http://127.0.0.1:8000/          # -> hey
"""

import os


async def server(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"hey\n"
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)),
                    (b"x-worker-pid", str(os.getpid()).encode())],
    })
    await send({"type": "http.response.body", "body": body})
