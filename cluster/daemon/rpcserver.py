"""The daemon's side of rpc.sock: who may connect, and how each connection's requests are answered.

Its own accept loop (not asyncio's start_unix_server) so that every peer is checked before anything is read
from it: only the daemon's own uid and root are served (SO_PEERCRED); anyone else gets one FORBIDDEN line and
is closed. While a request runs, its connection gets a progress line every second (Progress), so that a
client can bound its wait for a line without cutting a long reload short. The wire format is rpc.py's (and
PROTOCOL.md's).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import traceback
from collections.abc import Callable
from typing import Any

from prun.cluster.daemon import rpc

BACKLOG = 128
ACCEPT_BATCH = 16  # connections accepted per wakeup: the backlog drains without starving the loop
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
PROGRESS_INTERVAL = 1.0  # seconds between progress lines of a running request (clients wait 5 s for a line)


class RpcServer:
    """Listens on rpc.sock (0600), admits the daemon's own user and root, and serves each connection."""

    def __init__(self, path: str, handle: rpc.Handler, log: Callable[[str], None]) -> None:
        self.path = path
        self.handle = handle
        self.log = log
        self.uid = os.getuid()
        self.listener: socket.socket | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # one per connection, kept until it ends

    def start(self) -> None:
        """Bind and listen (the socket is 0600 before anyone can connect), then accept from the loop."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)
            listener.listen(BACKLOG)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self.listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting; connections being answered finish on their own."""
        if self.listener is not None:
            asyncio.get_running_loop().remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None

    # ---- accepting -------------------------------------------------------------------------------

    def _accept(self) -> None:
        """Accept what waits in the backlog, a batch per wakeup."""
        assert self.listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                self._pause(f"accept on {self.path} failed: {exc.strerror}")
                return
            self._admit(sock)

    def _pause(self, why: str) -> None:
        """Stop accepting for a second (what asyncio does on any accept error)."""
        assert self.listener is not None
        loop = asyncio.get_running_loop()
        fd = self.listener.fileno()
        self.log(f"{why}; accepting again in 1 s")
        loop.remove_reader(fd)
        loop.call_later(1.0, self._resume, fd)

    def _resume(self, fd: int) -> None:
        if self.listener is not None and self.listener.fileno() == fd:
            asyncio.get_running_loop().add_reader(fd, self._accept)

    def _admit(self, sock: socket.socket) -> None:
        """Serve a peer of our own uid or root; refuse anyone else with one FORBIDDEN line."""
        try:
            pid, uid, _gid = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
        except OSError:
            sock.close()
            return
        if uid not in (self.uid, 0):
            self.log(f"refused an RPC connection from pid {pid} (uid {uid}): only uid {self.uid} and root may "
                     f"use this daemon")
            reject(sock, rpc.FORBIDDEN, f"only uid {self.uid} and root may use this prun daemon, not uid {uid}")
            return
        task = asyncio.get_running_loop().create_task(self._serve(sock))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=rpc.MAX_MESSAGE)
        except OSError:
            sock.close()
            return
        await serve_connection(reader, writer, self.handle)


def reject(sock: socket.socket, code: str, message: str) -> None:
    """One error line to a peer we will not serve, then close (a full buffer loses the line, not the loop)."""
    try:
        sock.setblocking(False)
        sock.send(rpc.encode({"id": None, "error": {"code": code, "message": message}}))
    except OSError:
        pass
    finally:
        sock.close()


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: rpc.Handler) -> None:
    """Answer requests on one connection until the client closes it (or it becomes a subscription)."""
    subscribed = False
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                writer.write(error_line(None, rpc.BAD_MESSAGE, f"message over {rpc.MAX_MESSAGE} bytes"))
                await writer.drain()
                return  # cannot find the next message's start: close
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    writer.write(error_line(None, rpc.BAD_MESSAGE, "message not ended by a newline"))
                    await writer.drain()
                return
            if not line.strip():
                continue
            request_id, reply = await answer(line, handle, writer)
            if reply is rpc.STREAM:
                subscribed = True
                writer.write(rpc.encode({"id": request_id, "result": "subscribed"}))
                return  # the bus writes to this connection from now on
            writer.write(reply)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not subscribed and not writer.is_closing():
            writer.close()


async def answer(line: bytes, handle: rpc.Handler, writer: asyncio.StreamWriter) -> tuple[Any, Any]:
    """(the request's id, its encoded reply or rpc.STREAM) for one request line."""
    request_id: Any = None
    try:
        request_id, command, args = rpc.parse_request(line)
        progress = Progress(writer, request_id)
        try:
            result = await handle(command, args, writer)
        finally:
            progress.stop()
        if result is rpc.STREAM:
            return request_id, rpc.STREAM
        return request_id, rpc.encode({"id": request_id, "result": result})
    except rpc.RpcError as exc:
        request_id = request_id if request_id is not None else exc.request_id
        return request_id, error_line(request_id, exc.code, exc.message)
    except Exception as exc:  # a bug must not take the daemon down
        traceback.print_exc()
        return request_id, error_line(request_id, rpc.INTERNAL, f"{type(exc).__name__}: {exc}")


class Progress:
    """While a request runs, a progress line for its id every PROGRESS_INTERVAL: how a client tells a daemon
    at work (a reload may take minutes) from one that is stopped or wedged."""

    def __init__(self, writer: asyncio.StreamWriter, request_id: Any) -> None:
        self.writer = writer
        self.line = rpc.encode({"id": request_id, "progress": "working"})
        self.timer = asyncio.get_running_loop().call_later(PROGRESS_INTERVAL, self.tick)

    def tick(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(self.line)  # not drained: a client that reads nothing holds a line a second
        self.timer = asyncio.get_running_loop().call_later(PROGRESS_INTERVAL, self.tick)

    def stop(self) -> None:
        self.timer.cancel()


def error_line(request_id: Any, code: str, message: str) -> bytes:
    return rpc.encode({"id": request_id, "error": {"code": code, "message": message}})
