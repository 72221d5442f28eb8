"""ASGI lifespan: the app's startup before a worker is READY, its shutdown last when the worker drains."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from prun.runtime.server import BootError


class Lifespan:
    """Runs the app's lifespan scope in one task; `state` is shared (shallow-copied) with every request."""

    def __init__(self, app: Any, mode: str, loop: asyncio.AbstractEventLoop) -> None:
        if mode not in ("auto", "on", "off"):
            raise BootError(f"unknown lifespan mode {mode!r} (choose from auto, on, off)")
        self.app = app
        self.mode = mode
        self.loop = loop
        self.state: dict[str, Any] = {}
        self.supported = False
        self._task: asyncio.Task[None] | None = None
        self._incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sent_any = False
        self._started: asyncio.Future[str | None] = loop.create_future()  # None, or why startup failed
        self._stopped: asyncio.Future[str | None] = loop.create_future()

    async def startup(self) -> None:
        """Run the startup; raise BootError("lifespan startup failed: ...") when the app says it failed."""
        if self.mode == "off":
            return
        self._incoming.put_nowait({"type": "lifespan.startup"})
        self._task = self.loop.create_task(self._main())
        failure = await self._started
        if failure is not None:
            raise BootError(f"lifespan startup failed: {failure}")

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:  # noqa: BLE001 - reported through the futures below
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not self._started.done():
                if self.mode == "auto" and not self._sent_any:
                    self._started.set_result(None)  # the app does not speak lifespan: serve without it
                else:
                    self._started.set_result(reason)
            elif not self._stopped.done():
                self._stopped.set_result(reason)
            return
        if not self._started.done():
            if self.mode == "on" and not self._sent_any:
                self._started.set_result("the app returned without completing the lifespan startup")
            else:
                self._started.set_result(None)
        if not self._stopped.done():
            self._stopped.set_result(None)

    async def _receive(self) -> dict[str, Any]:
        return await self._incoming.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if isinstance(kind, str) and kind.startswith("lifespan."):
            self._sent_any = True
        if kind == "lifespan.startup.complete":
            self.supported = True
            if not self._started.done():
                self._started.set_result(None)
        elif kind == "lifespan.startup.failed":
            if not self._started.done():
                self._started.set_result(message.get("message") or "the app reported a failure")
        elif kind == "lifespan.shutdown.complete":
            if not self._stopped.done():
                self._stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            if not self._stopped.done():
                self._stopped.set_result(message.get("message") or "the app reported a failure")
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for the lifespan scope")

    async def shutdown(self, timeout: float) -> None:
        """Run the app's shutdown (at most `timeout` seconds); a failure is reported on stderr."""
        if not self.supported or self._task is None:
            return
        self._incoming.put_nowait({"type": "lifespan.shutdown"})
        try:
            failure = await asyncio.wait_for(asyncio.shield(self._stopped), timeout)
        except asyncio.TimeoutError:
            failure = f"it did not finish within {timeout:g} s"
            self._task.cancel()
        if failure is not None:
            sys.stderr.write(f"prun: lifespan shutdown failed: {failure}\n")
            sys.stderr.flush()
