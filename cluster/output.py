"""--log-format json: the master relays each line its workers print as one JSON object."""

from __future__ import annotations

import asyncio
import os

from prun.cluster.log import Log
from prun.cluster.worker import WorkerProcess


class OutputRelay:
    """Reads the workers' stdout and stderr pipes and writes whole lines through the Log."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: Log) -> None:
        self.loop = loop
        self.log = log
        self._partial: dict[int, bytes] = {}  # an unfinished line, by pipe fd

    def attach(self, worker: WorkerProcess) -> None:
        for fd in worker.outputs:
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, self._read, worker, fd)

    def _read(self, worker: WorkerProcess, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buffered = self._partial.pop(fd, b"") + data
        if data:
            *lines, rest = buffered.split(b"\n")
            if rest:
                self._partial[fd] = rest
        else:  # EOF: the worker and anything it started have closed the pipe
            lines = [buffered] if buffered else []
            self.loop.remove_reader(fd)
            os.close(fd)
        stream = worker.outputs.get(fd, "stdout")
        for line in lines:
            self.log.worker_line(worker.slot, worker.pid, stream, line.decode(errors="replace"))
