"""The HTTP server inside real prun processes: a Starlette app, a Flask app, and reloads under HTTP load."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support import KeepAliveLoad, wait_until

STARLETTE_APP = '''
import contextlib, os
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from lifespan"}

async def home(request):
    return JSONResponse({"greeting": request.state.greeting, "pid": os.getpid(),
                         "path": request.url.path, "root_path": request.scope["root_path"]})

def sync_view(request):  # runs in Starlette's thread pool (anyio)
    return PlainTextResponse("sync ok")

async def echo(request):
    return PlainTextResponse((await request.body()).upper())

async def stream(request):
    async def parts():
        for i in range(3):
            yield f"part {i};"
    return StreamingResponse(parts(), media_type="text/plain")

app = Starlette(routes=[Route("/", home), Route("/sync", sync_view), Route("/echo", echo, methods=["POST"]),
                        Route("/stream", stream)], lifespan=lifespan)
'''

FLASK_APP = '''
import os
from flask import Flask, jsonify, request

app = Flask(__name__)

@app.get("/")
def home():
    return jsonify(pid=os.getpid(), script_name=request.script_root, path=request.path)

@app.post("/echo")
def echo():
    return request.get_data().upper()

@app.get("/fail")
def fail():
    raise RuntimeError("flask view failed")
'''

LOAD_APP = '''
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.005)  # keeps requests in flight when a worker starts draining
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"pong"})
'''


def write_app(directory: Path, name: str, code: str) -> None:
    (directory / f"{name}.py").write_text(code)


def test_starlette_app_end_to_end(prun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_app(tmp_path, "web", STARLETTE_APP)
    master = prun("web:app", "-i", "2", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "--root-path", "/api")
    port = master.wait_ready()
    base = f"http://127.0.0.1:{port}"
    # --root-path: a proxy in front strips "/api"; the app still sees (and builds URLs with) its mount point.
    with httpx.Client(base_url=base, timeout=10) as client:
        home = client.get("/")
        assert home.status_code == 200
        assert home.json() == {"greeting": "hello from lifespan", "pid": home.json()["pid"], "path": "/api/",
                               "root_path": "/api"}
        assert client.get("/sync").text == "sync ok"
        assert client.post("/echo", content=b"shout").text == "SHOUT"
        streamed = client.get("/stream")
        assert streamed.text == "part 0;part 1;part 2;"
        assert streamed.headers["transfer-encoding"] == "chunked"
        assert client.get("/missing").status_code == 404
        assert home.headers["server"] == "prun"


def test_flask_app_end_to_end(prun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_app(tmp_path, "shop", FLASK_APP)
    master = prun("shop:app", "-i", "1", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "--interface", "wsgi",
                  "--root-path", "/shop")
    port = master.wait_ready()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        home = client.get("/")  # behind a proxy that strips "/shop": SCRIPT_NAME carries it
        assert home.json()["script_name"] == "/shop" and home.json()["path"] == "/"
        assert client.get("/nowhere").status_code == 404
        assert client.post("/echo", content=b"quiet").text == "QUIET"
        assert client.get("/fail").status_code == 500
        assert client.get("/").status_code == 200  # the worker survived
    master.wait_for("flask view failed")


def test_hups_under_keep_alive_http_load_lose_no_request(prun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_app(tmp_path, "service", LOAD_APP)
    master = prun("service:app", "-i", "2", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "--graceful-timeout", "10")
    port = master.wait_ready()
    old = wait_until(lambda: len(master.workers()) == 2 and set(master.workers()))
    with KeepAliveLoad(port) as load:
        load.wait_requests(200)
        for generation in range(2, 6):
            master.reload(rf"reload complete: 2 workers on gen {generation}")
            load.wait_requests(100)
        time.sleep(0.2)  # a moment of load on the last generation before stopping
    assert load.failed == 0, load.errors[:5]
    assert load.ok > 1000
    assert not set(master.workers()) & old
