"""ASGI apps served with public asyncio only: the path a Python without asyncio's private `_enter_task` gets.

runtime/http/asgi.py runs an app's first step inline, inside its connection's host task, which takes
asyncio's private `_enter_task`/`_leave_task` (and `Task._must_cancel` on 3.10). Without them (`INLINE`
False) each request runs in a Task of its own. The task tests of test_http_protocol.py run here again on
that path, and the suite runs on every Python prun claims (pyproject's classifiers).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from prun.runtime.http import asgi
from tests import test_http_protocol as inline
from tests.test_http_support import Client, ok, serving


@pytest.fixture(autouse=True)
def public_asyncio(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(asgi, "INLINE", False)
    yield


def test_the_private_path_is_there_on_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Python prun claims that loses these would silently serve every request in a Task: say so here.
    monkeypatch.undo()
    assert asgi.INLINE, f"Python {sys.version_info[:3]} has no asyncio.tasks._enter_task (or Task._must_cancel)"


def test_each_request_that_suspends_runs_in_a_task_of_its_own() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        task = asyncio.current_task()
        await asyncio.sleep(0)
        seen.append(task is not None and task is asyncio.current_task())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(app) as srv, srv.counting_tasks() as created, Client(srv.port) as client:
        for _ in range(5):
            assert client.get("/").body == b"ok"
    assert seen == [True] * 5
    assert len(created) == 5  # no host task: one Task per request


def test_an_app_that_does_not_suspend_is_served() -> None:
    with serving(ok(b"fast")) as srv, Client(srv.port) as client:
        for _ in range(5):
            assert client.get("/").body == b"fast"


def test_own_context_and_current_task_across_suspensions() -> None:
    inline.test_app_that_suspends_runs_in_a_task_with_its_own_context()


def test_app_timeout_cancels_the_suspended_app() -> None:
    inline.test_app_timeout_cancels_the_suspended_app()


def test_app_still_running_after_its_response_does_not_block_the_next_request() -> None:
    inline.test_app_still_running_after_its_response_does_not_block_the_next_request()


def test_app_cancelling_its_own_task_in_its_first_step() -> None:
    inline.test_app_cancelling_its_own_task_in_its_first_step_is_cancelled_at_its_next_await()


def test_starlette_middleware_background_tasks_and_thread_pool() -> None:
    inline.test_starlette_middleware_background_tasks_and_thread_pool()


def test_pipelined_requests_are_answered_in_order() -> None:
    inline.test_pipelined_requests_are_answered_in_order()
