"""The ASGI app of the WebSocket echo benchmark (python -m benchmarks.ws_echo).

A WebSocket is accepted (no subprotocol, no extra headers), then every message is sent back as it came,
text as text and bytes as bytes, until the client disconnects. A plain HTTP request gets a hello world
(the harness's readiness check); a lifespan scope returns at once.
"""

HELLO = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": HELLO})
