"""ASGI lifespan: startup before serving, its failure a boot failure with the reason, state shared with requests."""

from __future__ import annotations

from typing import Any

import pytest

from prun.runtime.server import BootError
from tests.test_http_support import Client, ServerThread, serving


def lifespan_app(fail: str = "", raise_in_startup: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if raise_in_startup:
                        raise RuntimeError("database unreachable")
                    if fail:
                        await send({"type": "lifespan.startup.failed", "message": fail})
                        return
                    scope["state"]["pool"] = "the pool"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        state = scope["state"]
        body = f"{state.get('pool')}".encode()
        state["mutated"] = True  # a request's copy: the next request must not see it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body + (b" dirty" if "mutated" in scope else b"")})

    return app


def test_state_from_startup_reaches_every_request_as_a_copy() -> None:
    with serving(lifespan_app()) as srv, Client(srv.port) as client:
        assert client.get("/").body == b"the pool"
        assert client.get("/").body == b"the pool"
        assert srv.server.state == {"pool": "the pool"}  # type: ignore[attr-defined]


def test_startup_failure_reported_by_the_app_is_a_boot_error_with_its_reason() -> None:
    server = ServerThread(lifespan_app(fail="no config file"))
    try:
        with pytest.raises(BootError, match="^lifespan startup failed: no config file$"):
            server.start()
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_exception_after_receiving_startup_is_a_boot_error_in_on_mode(mode: str) -> None:
    server = ServerThread(lifespan_app(raise_in_startup=True), lifespan=mode)
    try:
        if mode == "on":
            with pytest.raises(BootError, match="lifespan startup failed: RuntimeError: database unreachable"):
                server.start()
        else:  # auto: it raised before sending anything, so it does not speak lifespan
            server.start()
            with Client(server.port) as client:
                assert client.get("/").body == b"None"
    finally:
        server.stop()


def test_app_without_lifespan_support_serves_in_auto_mode() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"  # raises on the lifespan scope
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serving(app) as srv, Client(srv.port) as client:
        assert client.get("/").status == 204


def test_lifespan_off_never_calls_the_app_with_lifespan() -> None:
    scopes: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    with serving(app, lifespan="off") as srv, Client(srv.port) as client:
        client.get("/")
    assert scopes == ["http"]


def test_on_mode_requires_the_app_to_complete_startup() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    server = ServerThread(app, lifespan="on")
    try:
        with pytest.raises(BootError, match="lifespan startup failed"):
            server.start()
    finally:
        server.stop()


def test_shutdown_failure_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.failed", "message": "could not flush"})

    with serving(app):
        pass
    assert "lifespan shutdown failed: could not flush" in capsys.readouterr().err
