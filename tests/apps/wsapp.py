"""A raw ASGI WebSocket app for the WebSocket tests; every path is one behaviour.

    /echo       accept (with the first offered subprotocol and an x-served-by header), echo text and bytes;
                the text "who" is answered "<pid> gen <generation>"; "close:CODE" closes with CODE
    /deny       reject the upgrade with a 401 HTTP response
    /refuse     close before accepting (403)
    /crash      accept, then raise (the client sees 1011)
    /flood      accept, then send 1 MiB messages as fast as the client takes them (counted in /status text)
The lifespan shutdown prints "lifespan shutdown" after the last open WebSocket ended.
"""

import os

import setproctitle

OPEN = set()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                print(f"lifespan shutdown with {len(OPEN)} WebSockets open", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})
        return
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
        return
    if path == "/refuse":
        await send({"type": "websocket.close"})
        return
    offered = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None,
                "headers": [(b"x-served-by", str(os.getpid()).encode())]})
    if path == "/crash":
        raise RuntimeError("the app failed after accepting")
    if path == "/flood":
        chunk = b"x" * (1 << 20)
        sent = 0
        while True:
            await send({"type": "websocket.send", "bytes": chunk})
            sent += 1
            if sent % 16 == 0:
                print(f"flood sent {sent}", flush=True)
    me = object()
    OPEN.add(me)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                print(f"disconnect {message['code']}", flush=True)
                return
            text = message.get("text")
            if text == "who":
                gen = setproctitle.getproctitle().rpartition(" gen ")[2]
                await send({"type": "websocket.send", "text": f"{os.getpid()} gen {gen}"})
            elif text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:]), "reason": "asked"})
            elif text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    finally:
        OPEN.discard(me)
