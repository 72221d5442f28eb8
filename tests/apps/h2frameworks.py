"""One small route in each framework prun serves, for tests/test_http2.py to compare over HTTP/1.1 and HTTP/2.

GET /items/{id}?q= answers JSON with the id, q and the x-token header; POST answers the body's length.
The module is also its own Django settings module (DJANGO_SETTINGS_MODULE=h2frameworks) and URLconf.
"""

import json

import flask
import litestar
import quart
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET_KEY = "test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "h2frameworks"
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []


def _answer(item: int, q: str, token: str, size: int | None) -> dict:  # type: ignore[type-arg]
    return {"item": item, "q": q, "token": token} if size is None else {"item": item, "size": size}


fastapi_app = FastAPI()


@fastapi_app.get("/items/{item}")
async def fastapi_get(item: int, request: Request, q: str = "") -> dict:  # type: ignore[type-arg]
    return _answer(item, q, request.headers.get("x-token", ""), None)


@fastapi_app.post("/items/{item}")
async def fastapi_post(item: int, request: Request) -> dict:  # type: ignore[type-arg]
    return _answer(item, "", "", len(await request.body()))


async def starlette_item(request):  # type: ignore[no-untyped-def]
    item = int(request.path_params["item"])
    if request.method == "POST":
        return JSONResponse(_answer(item, "", "", len(await request.body())))
    return JSONResponse(_answer(item, request.query_params.get("q", ""), request.headers.get("x-token", ""), None))


starlette_app = Starlette(routes=[Route("/items/{item:int}", starlette_item, methods=["GET", "POST"])])

quart_app = quart.Quart("h2frameworks")


@quart_app.route("/items/<int:item>", methods=["GET", "POST"])
async def quart_item(item: int):  # type: ignore[no-untyped-def]
    if quart.request.method == "POST":
        return quart.jsonify(_answer(item, "", "", len(await quart.request.get_data())))
    return quart.jsonify(_answer(item, quart.request.args.get("q", ""), quart.request.headers.get("x-token", ""), None))


@litestar.get("/items/{item:int}")
async def litestar_get(item: int, request: litestar.Request, q: str = "") -> dict:  # type: ignore[type-arg]
    return _answer(item, q, request.headers.get("x-token", ""), None)


@litestar.post("/items/{item:int}", status_code=200)
async def litestar_post(item: int, request: litestar.Request) -> dict:  # type: ignore[type-arg]
    return _answer(item, "", "", len(await request.body()))


litestar_app = litestar.Litestar(route_handlers=[litestar_get, litestar_post])

flask_app = flask.Flask("h2frameworks")


@flask_app.route("/items/<int:item>", methods=["GET", "POST"])
def flask_item(item: int):  # type: ignore[no-untyped-def]
    if flask.request.method == "POST":
        return flask.jsonify(_answer(item, "", "", len(flask.request.get_data())))
    return flask.jsonify(_answer(item, flask.request.args.get("q", ""), flask.request.headers.get("x-token", ""), None))


def django_item(request, item):  # type: ignore[no-untyped-def]
    from django.http import HttpResponse

    if request.method == "POST":
        data = _answer(item, "", "", len(request.body))
    else:
        data = _answer(item, request.GET.get("q", ""), request.headers.get("x-token", ""), None)
    return HttpResponse(json.dumps(data), content_type="application/json")


def _urlpatterns() -> list:  # type: ignore[type-arg]
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    return [path("items/<int:item>", csrf_exempt(django_item))]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "urlpatterns":  # Django's URLconf, made only when Django asks for it
        return _urlpatterns()
    if name in ("django_asgi", "django_wsgi"):
        import django

        django.setup(set_prefix=False)
        if name == "django_asgi":
            from django.core.asgi import get_asgi_application

            return get_asgi_application()
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    raise AttributeError(name)
