"""The TLS handshakes in progress in a worker, capped by --limit-tls-handshakes.

A handshake holds about 50 KiB of its worker (uvloop's SSL protocol and OpenSSL's state) until it ends, or
until --timeout-request-header passes: 2,000 clients that connected to a TLS port and sent nothing held
104 MiB of one worker for 10 s. At the cap, a new connection cuts the oldest handshake in progress if that
one began CUT_AFTER ago or more (a client that slow, while others wait, is cut); otherwise the worker stops
accepting on its TLS listeners until a handshake ends or the oldest may be cut: new connections wait in
the kernel's queue, where they cost the worker nothing (or another worker takes them), and a burst of
honest clients is paced, not cut. A connection the master hands over (--balance leastconn) cannot wait
there: it cuts the oldest handshake at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# How long a handshake runs before a new connection may cut it when the cap is reached: honest clients
# finish within a round trip or two; a silent or trickling one holds its place at most this long.
CUT_AFTER = 0.25


class Handshakes:
    """The handshakes in progress, oldest first, and the acceptors waiting for room among them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.limit = limit  # 0: no cap
        self.running: dict[asyncio.Task[None], float] = {}  # each handshake's task -> when it began
        self.waiting: list[Callable[[], None]] = []  # how to resume each acceptor that stopped for room
        self.timer: asyncio.TimerHandle | None = None
        self.cut = 0  # handshakes cut since the worker started

    def full(self) -> bool:
        return bool(self.limit) and len(self.running) >= self.limit

    def may_cut(self) -> bool:
        """Whether the oldest handshake has run CUT_AFTER, and so may be cut for a new connection."""
        return self.loop.time() - next(iter(self.running.values())) >= CUT_AFTER

    def start(self, task: asyncio.Task[None]) -> None:
        """`task` runs a new connection's handshake; the oldest is cut first if the cap is reached."""
        if self.full():
            oldest = next(iter(self.running))
            del self.running[oldest]
            self.cut += 1
            oldest.cancel()  # (the transport closes, and the connection with it)
        self.running[task] = self.loop.time()
        task.add_done_callback(self.ended)

    def ended(self, task: asyncio.Task[None]) -> None:
        if self.running.pop(task, None) is not None and self.waiting:
            self.wake()

    def wait(self, resume: Callable[[], None]) -> None:
        """An acceptor found no room: `resume` is called once a handshake ends or the oldest may be cut."""
        self.waiting.append(resume)
        if self.timer is None:
            self.timer = self.loop.call_at(next(iter(self.running.values())) + CUT_AFTER, self.wake)

    def wake(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiting, self.waiting = self.waiting, []
        for resume in waiting:
            resume()
