"""The event bus: every subscriber gets every event as one JSON line, as it happens.

    {"event": "online", "time": 1764623000.5, "app": "api", "id": 0, "pid": 4242, "workers": 2}

Events: started, online, exited (code or signal), restarting (delay), reload_started, reload_finished,
reload_failed (reason), scaled (workers), memory_limit (pid, memory, limit), stopping, stopped, deleted,
errored (reason), adopted, daemon_stopping.
A subscriber that cannot keep up (its socket buffer full for more than MAX_BACKLOG events) is dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prun.cluster.daemon.rpc import encode

MAX_BACKLOG = 1000


class Bus:
    def __init__(self) -> None:
        self.subscribers: dict[asyncio.StreamWriter, asyncio.Queue[bytes]] = {}

    def publish(self, event: str, **fields: Any) -> None:
        line = encode({"event": event, "time": round(time.time(), 3), **fields})
        for writer, queue in list(self.subscribers.items()):
            if queue.qsize() >= MAX_BACKLOG:
                self.drop(writer)
            else:
                queue.put_nowait(line)

    def subscribe(self, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.subscribers[writer] = queue
        asyncio.get_running_loop().create_task(self._pump(writer, queue))

    def drop(self, writer: asyncio.StreamWriter) -> None:
        self.subscribers.pop(writer, None)
        writer.close()

    async def _pump(self, writer: asyncio.StreamWriter, queue: asyncio.Queue[bytes]) -> None:
        try:
            while writer in self.subscribers:
                writer.write(await queue.get())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.drop(writer)

    def close(self) -> None:
        for writer in list(self.subscribers):
            self.drop(writer)
