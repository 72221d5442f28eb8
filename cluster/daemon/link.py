"""The daemon's end of one master's control channel (cluster/control.py): requests by id, events as they come.

    link = Link(loop, on_event, on_lost)
    link.connect(home.control_socket(app.id))         # OSError if nothing listens there
    reply = await link.request(control.Reload, timeout=600)   # the master's Reply, matched by id

The connection never blocks the daemon's loop: sends that do not fit are a lost link (the master is
stopped or wedged), and a lost link fails every request waiting on it at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from prun.cluster import control
from prun.runtime.channel import AsyncChannel


class LinkLost(ConnectionError):
    """The master's control channel closed (it exited, or the connection was dropped) before it answered."""


class Link:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_event: Callable[[Any], None],
                 on_lost: Callable[[], None]) -> None:
        self.loop = loop
        self.on_event = on_event
        self.on_lost = on_lost
        self.chan: AsyncChannel | None = None
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[control.Reply]] = {}

    @property
    def up(self) -> bool:
        return self.chan is not None and not self.chan.closed

    def connect(self, path: str) -> None:
        """Connect to the master's control listener (OSError if none answers there, or not our user's)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        try:
            sock.connect(path)
            if not control.trusted(sock):
                raise PermissionError(f"{path} belongs to another user")
        except OSError:
            sock.close()
            raise
        self.chan = AsyncChannel(sock, self.loop, self._received, self._eof, control.CODEC)

    def _received(self, msg: Any, fds: list[int]) -> None:
        for fd in fds:  # nothing rides along on this channel
            os.close(fd)
        if isinstance(msg, control.Reply):
            future = self.pending.pop(msg.id, None)
            if future is not None and not future.done():
                future.set_result(msg)
        elif msg is not None:
            self.on_event(msg)

    def _eof(self) -> None:
        self.chan = None
        self._fail_pending()
        self.on_lost()

    def _fail_pending(self) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LinkLost("the master's control channel closed before it answered"))

    async def request(self, kind: type[Any], timeout: float, **fields: Any) -> control.Reply:
        """Send a request of `kind` and wait for its Reply (LinkLost, or TimeoutError after `timeout`)."""
        if self.chan is None or self.chan.closed:
            raise LinkLost("the master has no control channel open")
        self.next_id += 1
        request_id = self.next_id
        future: asyncio.Future[control.Reply] = self.loop.create_future()
        self.pending[request_id] = future
        if not self.chan.send(kind(id=request_id, **fields)):
            self.pending.pop(request_id, None)
            self.close()
            raise LinkLost("the master does not take requests (stopped, or its buffer is full)")
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(request_id, None)

    def pump(self) -> None:
        """Handle every message already received (before the master's exit is acted on)."""
        if self.chan is not None:
            self.chan.pump()

    def close(self) -> None:
        """Drop the connection (the master keeps running); waiting requests fail."""
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        self._fail_pending()
