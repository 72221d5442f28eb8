"""ASGI 3 requests: receive/send for one exchange, and running the app without a Task per request.

Hot path, written for speed. Running the app: the first step of the app's coroutine is driven inline
with `coro.send(None)` from data_received. A hello-world app completes in that step, so the request costs
no Task, no loop iteration and no future. An app that suspends is handed, where it stopped, to its
connection's *host task*, which drives it on.

Why a host task and not a Task created at the suspension: during the inline step,
`asyncio.current_task()` must already name the task that will run the rest of the coroutine, or
`asyncio.timeout()`, TaskGroup, anyio cancel scopes and sniffio break or bind to the wrong task. So the
inline step runs "inside" the connection's host task (entered with asyncio's _enter_task while that task
sits idle), and the host task is the one that resumes the coroutine. Each request still gets its own
contextvars Context, as it would with a Task of its own. When the host task is busy (an app still
running after its response, e.g. background work, while the next request arrives), the next request
gets a plain Task.

Entering a task from a protocol callback takes asyncio's private `_enter_task`/`_leave_task` (and, on
3.10, the private `Task._must_cancel`). Where they are missing (`INLINE` is False) the server keeps to
public asyncio: no host tasks, and every request runs in a Task of its own, started with
`loop.create_task`; tests/test_http_protocol.py runs its task tests both ways on each Python.

Host tasks outlive their connections: one that waits idle when its connection closes is parked
(SPARE_HOSTS at most) and the next connection takes it, so a connection costs no Task creation, start
and cancellation (about 8 µs together), which with a new connection per request was a third of
prun's Python work per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any

from prun.runtime.http.exchange import Exchange
from prun.runtime.http.protocol import HttpProtocol
from prun.runtime.http.settings import HIGH_WATER

_DISCONNECT = {"type": "http.disconnect"}  # copied before it is handed out
SPARE_HOSTS = 256  # idle host tasks kept for the next connections

try:
    from asyncio.tasks import _enter_task, _leave_task

    INLINE = sys.version_info >= (3, 11) or hasattr(asyncio.Task, "_must_cancel")
except ImportError:  # pragma: no cover - a Python without them: public asyncio only (a Task per request)
    INLINE = False

if sys.version_info >= (3, 11):

    def _cancel_pending(task: asyncio.Task[Any]) -> bool:
        """Whether `task` was asked to cancel and has not yet delivered it."""
        return task.cancelling() > 0

else:

    def _cancel_pending(task: asyncio.Task[Any]) -> bool:
        # Python 3.10 has no Task.cancelling(); a task cancelled before its first step has this private flag set
        # (INLINE is False without it).
        return bool(getattr(task, "_must_cancel"))  # noqa: B009


@types.coroutine
def _drive(ctx: contextvars.Context, coro: Coroutine[Any, Any, Any], fut: Any) -> Generator[Any, Any, Any]:
    """Go on driving `coro`, suspended on `fut`, from inside whichever task awaits this.

    Yielding what the coroutine yielded lets the enclosing Task wait on it exactly as if it ran `coro`
    itself; each step runs in the request's own Context.
    """
    send = coro.send
    throw = coro.throw
    while True:
        try:
            yield fut
        except BaseException as exc:  # the enclosing task was cancelled: deliver it to the app
            try:
                fut = ctx.run(throw, exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                fut = ctx.run(send, None)
            except StopIteration as stop:
                return stop.value


async def finish(ex: AsgiExchange, ctx: contextvars.Context, coro: Any, fut: Any, cancel: bool = False) -> None:
    """Drive an app coroutine that suspended inline to its end (cancelled first if `cancel`)."""
    try:
        if cancel:
            fut = ctx.run(coro.throw, asyncio.CancelledError())
        await _drive(ctx, coro, fut)
    except StopIteration:  # the app caught that cancellation and returned
        ex.app_done(None)
    except BaseException as exc:
        ex.app_done(exc)
    else:
        ex.app_done(None)


class HostBox:
    """A host task's own state, which moves with it from connection to connection (see take_host)."""

    __slots__ = ("proto", "ready", "wake")

    def __init__(self, proto: HttpProtocol) -> None:
        self.proto: HttpProtocol | None = proto  # the connection it serves; None while parked
        self.ready = False  # the task has run its first step
        self.wake: asyncio.Future[None] | None = None  # what the task waits on while idle (or parked)


async def host_main(box: HostBox) -> None:
    """A host task: finishes, one at a time, the app coroutines of its connection that suspended inline."""
    box.ready = True
    cancel_first = False
    while True:
        proto = box.proto
        if proto is None:
            return  # cancelled while parked: the task ends (take_host skips it)
        job = proto.host_job
        if job is None:
            if proto.closed:
                return
            box.wake = wake = proto.loop.create_future()
            proto = None  # a parked task must not keep its last connection alive
            try:
                await wake
            except asyncio.CancelledError:
                proto = box.proto
                if proto is None or proto.closed:
                    return
                task = asyncio.current_task()
                if task is not None and sys.version_info >= (3, 11):
                    task.uncancel()
                # The app cancelled "its" task during its inline step: deliver it when it resumes.
                cancel_first = proto.host_job is not None
            continue
        proto.host_job = None
        try:
            await finish(job[0], job[1], job[2], job[3], cancel=cancel_first)
        finally:
            cancel_first = False
            proto.host_busy = False


def take_host(proto: HttpProtocol) -> asyncio.Task[None] | None:
    """A host task for a new connection: a parked one if there is one, else a new one (none if not INLINE)."""
    if not INLINE:
        return None
    spare = proto.shared.spare_hosts
    while spare:
        task: asyncio.Task[None]
        task, box = spare.pop()
        if not task.done():
            box.proto = proto
            proto.host_box = box
            return task
    proto.host_box = box = HostBox(proto)
    return proto.loop.create_task(host_main(box))


def release_host(proto: HttpProtocol) -> None:
    """The connection closed with its host task idle: park the task for another connection, or end it."""
    task, box = proto.host, proto.host_box
    proto.host = proto.host_box = None
    if task is None:
        return
    spare = proto.shared.spare_hosts
    if (box is not None and box.ready and box.wake is not None and not box.wake.done() and proto.host_job is None
            and len(spare) < SPARE_HOSTS and not proto.shared.draining):
        box.proto = None
        spare.append((task, box))
    else:
        task.cancel()


class AsgiExchange(Exchange):
    """An ASGI http request: the app's receive and send, and how the app is run."""

    __slots__ = ()
    proto: HttpProtocol

    # -- running the app --------------------------------------------------------------------------

    def run(self) -> None:
        proto = self.proto
        shared = proto.shared
        limit = proto.settings.limit_concurrency
        if limit and shared.active >= limit:
            self.answer_error(503)
            return
        shared.active += 1
        try:
            coro = shared.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self.app_done(exc)
            return
        host = proto.host
        if proto.host_busy or host is None or proto.closed:
            proto.loop.create_task(self.in_task(coro))
            return
        ctx = contextvars.copy_context()
        loop = proto.loop
        try:
            _enter_task(loop, host)
        except RuntimeError:  # called from inside a running task (not from a protocol callback)
            loop.create_task(self.in_task(coro))
            return
        try:
            fut = ctx.run(coro.send, None)
        except StopIteration:
            _leave_task(loop, host)
            if self.finished:
                shared.active -= 1  # the common case of app_done, inlined
            else:
                self.app_done(None)
            return
        except BaseException as exc:
            _leave_task(loop, host)
            self.app_done(exc)
            return
        _leave_task(loop, host)
        box = proto.host_box
        if not box.ready and _cancel_pending(host):
            # The app cancelled its task before that task ever ran a step, which no task survives: this
            # request ends in a task of its own, with the cancellation delivered, and the connection gets
            # a new host task.
            assert shared.make_host is not None
            proto.host = shared.make_host(proto)
            loop.create_task(finish(self, ctx, coro, fut, cancel=True))
            return
        # The app suspended: its host task takes it from here.
        proto.host_busy = True
        proto.host_job = (self, ctx, coro, fut)
        wake = box.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def in_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except BaseException as exc:
            self.app_done(exc)
        else:
            self.app_done(None)

    # -- request body -----------------------------------------------------------------------------

    def feed(self, body: bytes) -> None:
        if self.finished or self.disconnected:
            return  # the app answered without reading it
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER:
            self.proto.pause_reading()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def complete(self) -> None:
        self.body_complete = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def disconnect(self) -> None:
        self.disconnected = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.disconnected or self.finished:
                return dict(_DISCONNECT)
            if self.chunks or (self.body_complete and not self.delivered):
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                if chunks:
                    self.chunks = []
                    self.buffered = 0
                    if self.proto.read_paused:
                        self.proto.maybe_resume_reading()
                more = not self.body_complete
                if not more:
                    self.delivered = True
                return {"type": "http.request", "body": body, "more_body": more}
            if self.expect and not self.continued:
                self.send_continue()
            self.waiter = waiter = self.proto.loop.create_future()
            await waiter
            self.waiter = None

    # -- response ---------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.disconnected:
                return
            more = message.get("more_body", False)
            self.write(message.get("body", b""), more)
            if more and self.proto.write_paused:
                await self.proto.drain_writes()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            self.started = True  # Exchange.start, inlined on this hot path
            self.status = message["status"]
            self.resp_headers = message.get("headers", ())
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an http request")
