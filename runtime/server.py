"""What the container shim runs inside a worker: one Server serving every listener.

Each interface (stream, protocol, ASGI/WSGI HTTP) implements this contract; the shim only speaks to it.
"""

from __future__ import annotations

import abc
import asyncio
import socket
from collections.abc import Callable
from typing import Any

from prun.runtime.options import EXIT_BOOT_FAILURE, WorkerOptions


class BootError(Exception):
    """The worker cannot start serving; the message is shown to the user as is."""

    def __init__(self, message: str, exit_code: int = EXIT_BOOT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # the worker's exit status: 3, or the code the app passed to sys.exit


class Server(abc.ABC):
    """A worker's server. The shim calls startup, serve, then drain; accept in leastconn mode."""

    def __init__(self, app: Any, options: WorkerOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.options = options
        self.loop = loop
        self.connections = 0  # open right now
        self.requests = 0  # served since start (a connection counts as one for stream/protocol apps)
        # Set by the shim: called when `connections` changed in a way the master should hear at once.
        self.on_change: Callable[[], None] = lambda: None
        # max-requests: when `requests` reaches request_limit (0: never), call on_limit once.
        self.request_limit = 0
        self.on_limit: Callable[[], None] = lambda: None
        self._handing_over: set[asyncio.Task[None]] = set()
        self.going_away = False  # set by the shim before drain: the master stops, no new generation follows

    async def startup(self) -> None:  # noqa: B027 (optional hook: most servers need no startup)
        """Prepare the app before any listener is served (ASGI lifespan startup). Raise BootError."""

    @abc.abstractmethod
    async def serve(self, listeners: list[socket.socket]) -> None:
        """Start accepting on every listener; return once accepting."""

    @abc.abstractmethod
    def protocol(self) -> asyncio.Protocol:
        """A protocol instance for one new connection."""

    def accept(self, conn: socket.socket) -> None:
        """Serve one connection the master accepted and handed over (leastconn balancing)."""
        conn.setblocking(False)
        task = self.loop.create_task(self._serve_handed_over(conn))
        self._handing_over.add(task)
        task.add_done_callback(self._handing_over.discard)

    async def _serve_handed_over(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol, conn)
        except OSError:
            conn.close()

    async def settle(self) -> None:
        """Wait until every handed-over connection is being served, so that a drain counts it."""
        while self._handing_over:
            await asyncio.gather(*self._handing_over, return_exceptions=True)

    @abc.abstractmethod
    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight work finish (at most `timeout` s), close, then shut the app down.

        Never shutdown() a listener: the socket is shared with the master and every other worker.
        """
