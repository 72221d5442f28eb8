"""An ASGI app that prints numbered lines: CHATTY_LINES of them per worker, on stdout, from a thread.

Each line is `chatty <pid> <n> <padding>`, one print (one write(2)) each, so that a test can check that every
line reached the log files exactly once and whole, across rotations.
"""

import os
import threading

LINES = int(os.environ.get("CHATTY_LINES", "0"))
PAD = "x" * int(os.environ.get("CHATTY_PAD", "80"))


def chatter() -> None:
    pid = os.getpid()
    for n in range(LINES):
        print(f"chatty {pid} {n} {PAD}", flush=True)
    print(f"chatty {pid} done", flush=True)


if LINES:
    threading.Thread(target=chatter, daemon=True).start()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"chatty {os.getpid()}".encode()})
