"""The same small service in each framework, for tests/test_frameworks.py to serve under prun and under the
server the framework's users run today (uvicorn for ASGI, gunicorn for WSGI), and compare what a client sees.

Every app answers:
    GET  /items/{item}?q=   JSON: the item, q and the x-token header
    POST /items/{item}      JSON: the item and the length of the body
    GET  /stream            text in three pieces (no Content-Length: chunked)
    GET  /redirect          302 to /items/1, with a cookie
    GET  /text              UTF-8 text that is not ASCII
    GET  /boom              the view raises: the framework's 500
    anything else           the framework's 404
The module is also its own Django settings module (DJANGO_SETTINGS_MODULE=frameworks) and URLconf.
"""

import asyncio
import json
from typing import Any

SECRET_KEY = "test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "frameworks"
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []

PIECES = (b"one\n", b"two\n", b"three\n")
TEXT = "h\u00e9llo \u2713\n"


def _item(item: int, q: str, token: str) -> dict[str, Any]:
    return {"item": item, "q": q, "token": token}


def _size(item: int, size: int) -> dict[str, Any]:
    return {"item": item, "size": size}


async def _pieces() -> Any:
    for piece in PIECES:
        await asyncio.sleep(0)
        yield piece


def __getattr__(name: str) -> Any:  # each app is made when asked for: a test imports only its framework's
    if name in _MAKERS:
        app = _MAKERS[name]()
        globals()[name] = app
        return app
    if name == "urlpatterns":
        return _django_urls()
    raise AttributeError(name)


# -- ASGI ---------------------------------------------------------------------------------------------

def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
    from starlette.routing import Route

    async def item(request: Any) -> Any:
        number = int(request.path_params["item"])
        if request.method == "POST":
            return JSONResponse(_size(number, len(await request.body())))
        return JSONResponse(_item(number, request.query_params.get("q", ""), request.headers.get("x-token", "")))

    async def redirect(request: Any) -> Any:
        response = RedirectResponse("/items/1", status_code=302)
        response.set_cookie("session", "abc")
        return response

    async def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    return Starlette(routes=[
        Route("/items/{item:int}", item, methods=["GET", "POST"]),
        Route("/stream", lambda request: StreamingResponse(_pieces(), media_type="text/plain")),
        Route("/redirect", redirect),
        Route("/text", lambda request: PlainTextResponse(TEXT)),
        Route("/boom", boom),
    ])


def _fastapi() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse, RedirectResponse, StreamingResponse

    app = FastAPI()

    @app.get("/items/{item}")
    async def get_item(item: int, request: Request, q: str = "") -> dict[str, Any]:
        return _item(item, q, request.headers.get("x-token", ""))

    @app.post("/items/{item}")
    async def post_item(item: int, request: Request) -> dict[str, Any]:
        return _size(item, len(await request.body()))

    @app.get("/stream")
    async def stream() -> Any:
        return StreamingResponse(_pieces(), media_type="text/plain")

    @app.get("/redirect")
    async def redirect() -> Any:
        response = RedirectResponse("/items/1", status_code=302)
        response.set_cookie("session", "abc")
        return response

    @app.get("/text", response_class=PlainTextResponse)
    async def text() -> str:
        return TEXT

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


def _quart() -> Any:
    import quart

    app = quart.Quart("frameworks")

    @app.route("/items/<int:item>", methods=["GET", "POST"])
    async def item(item: int) -> Any:
        if quart.request.method == "POST":
            return quart.jsonify(_size(item, len(await quart.request.get_data())))
        return quart.jsonify(_item(item, quart.request.args.get("q", ""), quart.request.headers.get("x-token", "")))

    @app.route("/stream")
    async def stream() -> Any:
        return _pieces(), 200, {"content-type": "text/plain"}

    @app.route("/redirect")
    async def redirect() -> Any:
        response = quart.redirect("/items/1")
        response.set_cookie("session", "abc")
        return response

    @app.route("/text")
    async def text() -> Any:
        return TEXT, 200, {"content-type": "text/plain; charset=utf-8"}

    @app.route("/boom")
    async def boom() -> Any:
        raise RuntimeError("boom")

    return app


def _litestar() -> Any:
    import litestar
    from litestar.response import Redirect, Stream

    @litestar.get("/items/{item:int}")
    async def get_item(item: int, request: litestar.Request, q: str = "") -> dict[str, Any]:  # type: ignore[type-arg]
        return _item(item, q, request.headers.get("x-token", ""))

    @litestar.post("/items/{item:int}", status_code=200)
    async def post_item(item: int, request: litestar.Request) -> dict[str, Any]:  # type: ignore[type-arg]
        return _size(item, len(await request.body()))

    @litestar.get("/stream")
    async def stream() -> Stream:
        return Stream(_pieces(), media_type="text/plain")

    @litestar.get("/redirect", status_code=302)
    async def redirect() -> Redirect:
        return Redirect("/items/1", status_code=302, cookies=[litestar.datastructures.Cookie("session", "abc")])

    @litestar.get("/text", media_type="text/plain; charset=utf-8")
    async def text() -> str:
        return TEXT

    @litestar.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return litestar.Litestar(route_handlers=[get_item, post_item, stream, redirect, text, boom])


def _sanic() -> Any:
    from sanic import Sanic, response

    app = Sanic("frameworks")

    @app.route("/items/<item:int>", methods=["GET", "POST"])
    async def item(request: Any, item: int) -> Any:
        if request.method == "POST":
            return response.json(_size(item, len(request.body)))
        return response.json(_item(item, request.args.get("q", ""), request.headers.get("x-token", "")))

    @app.get("/stream")
    async def stream(request: Any) -> None:
        out = await request.respond(content_type="text/plain")
        async for piece in _pieces():
            await out.send(piece)
        await out.eof()

    @app.get("/redirect")
    async def redirect(request: Any) -> Any:
        answer = response.redirect("/items/1")
        answer.add_cookie("session", "abc", secure=False, httponly=False, samesite=None)
        return answer

    @app.get("/text")
    async def text(request: Any) -> Any:
        return response.text(TEXT)

    @app.get("/boom")
    async def boom(request: Any) -> None:
        raise RuntimeError("boom")

    return app


class _FalconItem:
    def on_get(self, req: Any, resp: Any, item: int) -> None:
        resp.media = _item(item, req.get_param("q") or "", req.get_header("x-token") or "")

    def on_post(self, req: Any, resp: Any, item: int) -> None:
        resp.media = _size(item, len(req.bounded_stream.read()))


class _FalconRest:
    def on_get_stream(self, req: Any, resp: Any) -> None:
        resp.content_type = "text/plain"
        resp.stream = iter(PIECES)

    def on_get_redirect(self, req: Any, resp: Any) -> None:
        import falcon

        resp.set_cookie("session", "abc", secure=False, http_only=False)
        raise falcon.HTTPFound("/items/1")

    def on_get_text(self, req: Any, resp: Any) -> None:
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = TEXT

    def on_get_boom(self, req: Any, resp: Any) -> None:
        raise RuntimeError("boom")


def _falcon_routes(app: Any, item: Any, rest: Any) -> Any:
    app.add_route("/items/{item:int}", item)
    for suffix in ("stream", "redirect", "text", "boom"):
        app.add_route(f"/{suffix}", rest, suffix=suffix)
    return app


def _falcon_asgi() -> Any:
    import falcon.asgi

    class Item:
        async def on_get(self, req: Any, resp: Any, item: int) -> None:
            resp.media = _item(item, req.get_param("q") or "", req.get_header("x-token") or "")

        async def on_post(self, req: Any, resp: Any, item: int) -> None:
            resp.media = _size(item, len(await req.bounded_stream.read()))

    class Rest:
        async def on_get_stream(self, req: Any, resp: Any) -> None:
            resp.content_type = "text/plain"
            resp.stream = _pieces()

        async def on_get_redirect(self, req: Any, resp: Any) -> None:
            _FalconRest().on_get_redirect(req, resp)

        async def on_get_text(self, req: Any, resp: Any) -> None:
            _FalconRest().on_get_text(req, resp)

        async def on_get_boom(self, req: Any, resp: Any) -> None:
            raise RuntimeError("boom")

    return _falcon_routes(falcon.asgi.App(), Item(), Rest())


def _falcon_wsgi() -> Any:
    import falcon

    return _falcon_routes(falcon.App(), _FalconItem(), _FalconRest())


# -- WSGI ---------------------------------------------------------------------------------------------

def _flask() -> Any:
    import flask

    app = flask.Flask("frameworks")

    @app.route("/items/<int:item>", methods=["GET", "POST"])
    def item(item: int) -> Any:
        if flask.request.method == "POST":
            return flask.jsonify(_size(item, len(flask.request.get_data())))
        return flask.jsonify(_item(item, flask.request.args.get("q", ""), flask.request.headers.get("x-token", "")))

    @app.route("/stream")
    def stream() -> Any:
        return flask.Response(iter(PIECES), content_type="text/plain")

    @app.route("/redirect")
    def redirect() -> Any:
        response = flask.redirect("/items/1")
        response.set_cookie("session", "abc")
        return response

    @app.route("/text")
    def text() -> Any:
        return flask.Response(TEXT, content_type="text/plain; charset=utf-8")

    @app.route("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    return app


# -- Django, under both ---------------------------------------------------------------------------

def _django_urls() -> list[Any]:
    from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    def item(request: Any, item: int) -> Any:
        if request.method == "POST":
            data = _size(item, len(request.body))
        else:
            data = _item(item, request.GET.get("q", ""), request.headers.get("x-token", ""))
        return HttpResponse(json.dumps(data), content_type="application/json")

    def stream(request: Any) -> Any:
        return StreamingHttpResponse(iter(PIECES), content_type="text/plain")

    def redirect(request: Any) -> Any:
        response = HttpResponseRedirect("/items/1")
        response.set_cookie("session", "abc")
        return response

    def text(request: Any) -> Any:
        return HttpResponse(TEXT, content_type="text/plain; charset=utf-8")

    def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    return [path("items/<int:item>", csrf_exempt(item)), path("stream", stream), path("redirect", redirect),
            path("text", text), path("boom", boom)]


def _django(kind: str) -> Any:
    import django

    django.setup(set_prefix=False)
    if kind == "asgi":
        from django.core.asgi import get_asgi_application

        return get_asgi_application()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


_MAKERS = {
    "starlette_app": _starlette,
    "fastapi_app": _fastapi,
    "quart_app": _quart,
    "litestar_app": _litestar,
    "sanic_app": _sanic,
    "falcon_asgi": _falcon_asgi,
    "django_asgi": lambda: _django("asgi"),
    "flask_app": _flask,
    "falcon_wsgi": _falcon_wsgi,
    "django_wsgi": lambda: _django("wsgi"),
}
