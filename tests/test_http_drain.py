"""Drain (reloads and stops): stop accepting, close after each response, in-flight work finishes, nothing lost."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from tests.support import wait_until
from tests.test_http_support import Client, ServerThread, ok, serving


def held_app(entered: threading.Event, release: threading.Event, events: list[str]) -> Any:
    """/hold waits for `release` before answering; the lifespan shutdown is recorded in `events`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    events.append("lifespan shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/hold":
            entered.set()
            while not release.is_set():
                await asyncio.sleep(0.005)
            events.append("response")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    return app


def test_in_flight_request_finishes_with_connection_close_then_lifespan_shutdown() -> None:
    entered, release, events = threading.Event(), threading.Event(), []
    with serving(held_app(entered, release, events)) as srv, Client(srv.port) as client:
        client.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        assert entered.wait(5)
        drained = srv.drain(10)
        release.set()
        response = client.read()
        assert response.status == 200 and response.body == b"/hold"
        assert response.headers["connection"] == "close"
        assert client.closed_by_server()
        client.close()
        drained.result(10)
        assert events == ["response", "lifespan shutdown"]


def test_idle_keep_alive_connections_are_closed_after_the_window_fresh_ones_are_served() -> None:
    with serving(ok(b"late"), drain_idle_window=0.2) as srv, Client(srv.port) as idle, \
            Client(srv.port) as fresh:
        assert idle.get("/").status == 200
        srv.call(lambda: None)  # the fresh connection has been accepted by now
        started = time.monotonic()
        drained = srv.drain(10)
        assert idle.closed_by_server()  # the window has passed
        assert time.monotonic() - started >= 0.15
        response = fresh.get("/")  # a client slow to send its first request is still answered
        assert response.body == b"late"
        assert response.headers["connection"] == "close"
        assert fresh.closed_by_server()
        idle.close()
        fresh.close()
        drained.result(10)


def test_a_connection_that_never_speaks_is_closed_at_the_keepalive_timeout() -> None:
    with serving(ok(), drain_idle_window=0.1, keepalive_timeout=1.0) as srv, Client(srv.port) as silent:
        srv.call(lambda: None)
        started = time.monotonic()
        drained = srv.drain(10)
        assert silent.closed_by_server()
        silent.close()
        drained.result(10)
        assert 0.5 <= time.monotonic() - started < 5  # the keep-alive timeout, not the graceful one


def test_idle_connection_may_send_one_more_request_during_the_window() -> None:
    with serving(ok(b"late"), drain_idle_window=5.0) as srv, Client(srv.port) as client:
        assert client.get("/").status == 200
        drained = srv.drain(10)
        response = client.get("/")
        assert response.body == b"late"
        assert response.headers["connection"] == "close"
        assert client.closed_by_server()
        client.close()
        drained.result(3)  # no connection left: done well before the window ends


def test_stuck_requests_are_cut_at_the_timeout() -> None:
    entered = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        await asyncio.sleep(3600)

    with serving(app) as srv, Client(srv.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert entered.wait(5)
        started = time.monotonic()
        srv.drain(0.3).result(10)
        assert time.monotonic() - started < 3
        assert client.closed_by_server()
        assert srv.server.connections == 0


def test_drain_never_shuts_the_shared_listener_down() -> None:
    """Two generations share one listener: the old one drains, the new one serves every later client."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    old = ServerThread(ok(b"old"), listener=listener).start()
    new = None
    try:
        with Client(old.port) as client:
            assert client.get("/").body == b"old"
        old.drain(5).result(10)
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with Client(old.port) as waiting:  # queued in the kernel until a server accepts it
            waiting.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            new = ServerThread(ok(b"new"), listener=listener).start()
            assert waiting.read().body == b"new"
    finally:
        old.stop()
        if new is not None:
            new.stop()
        listener.close()


def test_pipelined_requests_already_received_are_answered_before_closing() -> None:
    entered, release, events = threading.Event(), threading.Event(), []
    with serving(held_app(entered, release, events)) as srv, Client(srv.port) as client:
        client.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        assert entered.wait(5)
        drained = srv.drain(10)
        release.set()
        first, second = client.read(), client.read()
        assert first.body == b"/hold" and "connection" not in first.headers
        assert second.body == b"/next" and second.headers["connection"] == "close"
        client.close()
        drained.result(10)


def test_a_connection_accepted_as_the_drain_begins_is_served_before_the_drain_ends() -> None:
    # uvloop calls connection_made on the turn of the loop after the accept: a drain that begins in between
    # must count that connection too, or the worker would exit and cut it before answering it.
    with serving(ok(b"late")) as srv:
        server = srv.server
        made = server.protocol
        at_end: list[tuple[int, int]] = []

        def protocol() -> Any:
            if not at_end and not server.draining:
                drain = srv.loop.create_task(server.drain(10))  # its first step runs before connection_made
                drain.add_done_callback(lambda _: at_end.append((server.requests, len(server.protocols))))
            return made()

        srv.call(setattr, server, "protocol", protocol)
        with Client(srv.port) as client:
            response = client.get("/")
        assert response.status == 200 and response.body == b"late"
        wait_until(lambda: at_end, what="the end of the drain")
        assert at_end == [(1, 0)]  # it ended once that connection was answered and closed
