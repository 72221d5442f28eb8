"""An ASGI app for the daemon tests: answers `$GREETING <worker pid>`, prints each request on stdout.

    BOOT_FAIL_FILE=PATH   fail to import while PATH exists (an errored app that a fix can restart)
    SLOW_BOOT=SECONDS     sleep while importing

GET /say?TEXT prints `said TEXT` on stdout; GET /child starts a `sleep` that inherits the worker's stdout
and stderr (the log pipes) and answers its pid; GET /exit?CODE ends the worker with exit code CODE; GET /instance?VAR
answers the worker's instance number from $VAR (PRUN_INSTANCE by default). GET /raise raises ValueError (an exception in a request);
GET /json?TEXT prints a JSON object on stdout; GET /print-traceback prints a traceback on stderr itself.
"""

import os
import sys
import time

time.sleep(float(os.environ.get("SLOW_BOOT", "0")))

if os.environ.get("BOOT_FAIL_FILE") and os.path.exists(os.environ["BOOT_FAIL_FILE"]):
    raise RuntimeError("the boot-fail file exists")

print(f"greeter imported in pid {os.getpid()}", flush=True)
print("greeter says hello on stderr", file=sys.stderr, flush=True)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/say":
        print(f"said {scope['query_string'].decode()}", flush=True)
    if scope["path"] == "/instance":  # this worker's number, in the variable the query names
        name = scope["query_string"].decode() or "PRUN_INSTANCE"
        body = f"{os.environ.get(name)}\n".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["path"] == "/exit":
        os._exit(int(scope["query_string"] or b"0"))
    if scope["path"] == "/raise":
        raise ValueError(f"boom {scope['query_string'].decode()}")
    if scope["path"] == "/json":
        import json

        print(json.dumps({"event": "greeted", "text": scope["query_string"].decode(), "level": "warning"}), flush=True)
    if scope["path"] == "/print-traceback":
        import traceback

        try:
            {}["missing"]
        except KeyError:
            traceback.print_exc()
    if scope["path"] == "/child":
        import subprocess

        body = b"%d\n" % subprocess.Popen(["sleep", "300"]).pid
    else:
        body = f"{os.environ.get('GREETING', 'hello')} {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
