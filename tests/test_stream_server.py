"""Raw TCP stream handlers in a real worker: every connection is closed when its handler ends."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

from tests.support import Prun, wait_until

HANDLERS = '''
async def handle(reader, writer):  # answers one line and returns without closing its writer
    line = await reader.readline()
    if line == b"fail\\n":
        raise RuntimeError("handler failed")
    writer.write(line)
'''


def test_connections_close_when_the_handler_returns_or_raises_and_no_fd_leaks(
    prun: type[Prun], tmp_path: Path
) -> None:
    (tmp_path / "lines.py").write_text(HANDLERS)
    master = prun("lines:handle", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "--interface", "stream")
    port = master.wait_ready()
    (pid,) = master.workers()
    worker = psutil.Process(pid)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"warm\n")
        assert sock.makefile("rb").read() == b"warm\n"  # read to the end: the server closed it
    baseline = worker.num_fds()
    for line in (b"hello\n", b"", b"fail\n") * 10:  # answered, silent, failing
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            if line:
                sock.sendall(line)
            else:
                sock.shutdown(socket.SHUT_WR)
            assert sock.makefile("rb").read() == (line if line != b"fail\n" else b"")
    wait_until(lambda: worker.num_fds() <= baseline, timeout=10, what="the worker's fds back to baseline")
    master.wait_for(r"exception in the connection handler")
    master.wait_for(r"RuntimeError: handler failed")
