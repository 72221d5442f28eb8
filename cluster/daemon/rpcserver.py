"""The daemon's side of rpc.sock: who may connect, how long a connection may idle, and how each connection's
requests are answered (the wire format is rpc.py's; PROTOCOL.md says all of it for clients).

Its own accept loop (not asyncio's start_unix_server, which only logs and pauses when accept() fails), so that:
- every peer is checked before anything is read from it: only the daemon's own uid and root are served
  (SO_PEERCRED); anyone else gets one FORBIDDEN line and is closed;
- running out of file descriptors closes the connections idle the longest instead of pausing: idle clients
  can never lock out `prun ls`.
A connection without a complete request for IDLE_TIMEOUT is closed (one whose request runs is not waiting for
one; a subscription belongs to the bus). While a request runs, its connection gets a progress line every
PROGRESS_INTERVAL, so that a client can bound its wait for a line without cutting a long reload short.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import os
import resource
import socket
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prun.cluster.daemon import rpc

BACKLOG = 128
ACCEPT_BATCH = 16  # connections accepted per wakeup: the backlog drains without starving the loop
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
PROGRESS_INTERVAL = 1.0  # seconds between progress lines of a running request (clients wait 5 s for a line)
IDLE_TIMEOUT = 10.0  # seconds a connection may go without a complete request, or a reply go unread
HEADROOM = 8  # idle connections closed when accept() finds no descriptor free: room for the daemon's own work
MIN_IDLE = 1.0  # seconds a connection must have waited for a request before it may be closed to make room


@dataclass(eq=False)
class Link:
    """One served connection as the accept loop sees it: closable to make room while it waits for a request."""

    idle_since: float  # monotonic: since when it has waited for a request (inf while one runs)
    writer: asyncio.StreamWriter | None = None  # None until its transport exists

    def idle(self, now: float) -> bool:
        """Whether it has waited for a request long enough to be closed (a newcomer's may be on its way)."""
        return self.writer is not None and now - self.idle_since >= MIN_IDLE


class RpcServer:
    """Listens on rpc.sock (0600), admits the daemon's own user and root, and serves each connection."""

    def __init__(self, path: str, handle: rpc.Handler, log: Callable[[str], None]) -> None:
        self.path = path
        self.handle = handle
        self.log = log
        self.uid = os.getuid()
        self.listener: socket.socket | None = None
        self.links: dict[Link, asyncio.Task[None]] = {}  # connections answering requests (not subscriptions)
        self.ceiling: int | None = None  # most links to hold, learned when descriptors ran out
        self.ceiling_limit = 0  # the descriptor limit it was learned under
        self.reserve: int | None = None  # a spare descriptor, given up to turn a peer away when none is free

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
        self.reserve = open_reserve()
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting; connections being answered finish on their own."""
        if self.listener is not None:
            asyncio.get_running_loop().remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        if self.reserve is not None:
            os.close(self.reserve)
            self.reserve = None

    # ---- accepting -------------------------------------------------------------------------------

    def _accept(self) -> None:
        """Accept what waits in the backlog, a batch per wakeup, keeping under the ceiling once one is known."""
        assert self.listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._out_of_descriptors(exc)
                else:
                    self._pause(f"accept on {self.path} failed: {exc.strerror}")
                return
            self._admit(sock)
            if self._over_ceiling():
                return  # the closed link's descriptor is freed on the loop's next turn, before we accept again

    def _over_ceiling(self) -> bool:
        """Past the ceiling, close the link idle the longest; whether one was closed."""
        if self.ceiling is None:
            return False
        if len(self.links) <= self.ceiling // 2 or descriptor_limit() != self.ceiling_limit:
            self.ceiling = None  # the pressure is over (or the limit moved): learn again if it comes back
            return False
        now = time.monotonic()
        idle = [link for link in self.links if link.idle(now)]
        if len(self.links) <= self.ceiling or not idle:
            return False
        self._drop(min(idle, key=lambda link: link.idle_since))
        return True

    def _out_of_descriptors(self, exc: OSError) -> None:
        """accept() found no descriptor free: close the links idle the longest, and hold no more than are left
        from now on; with none idle (for MIN_IDLE), turn the next peer away on the reserve descriptor."""
        now = time.monotonic()
        idle = heapq.nsmallest(HEADROOM, (link for link in self.links if link.idle(now)),
                               key=lambda link: link.idle_since)
        if not idle:
            self._turn_away()
            return
        for link in idle:
            self._drop(link)
        self.ceiling, self.ceiling_limit = len(self.links), descriptor_limit()
        self.log(f"out of file descriptors ({exc.strerror}) with {len(self.links) + len(idle)} RPC connections: "
                 f"closed the {len(idle)} idle the longest; holding at most {self.ceiling} from now on")

    def _turn_away(self) -> None:
        """Accept one peer on the reserve descriptor, tell it BUSY and close it: the backlog moves, the loop does
        not spin on a listener it cannot accept from."""
        assert self.listener is not None
        if self.reserve is None:
            self._pause("out of file descriptors, with no idle RPC connection to close")
            return
        os.close(self.reserve)
        try:
            sock, _ = self.listener.accept()
        except OSError:
            pass
        else:
            reject(sock, rpc.BUSY, "the prun daemon is out of file descriptors, with no idle connection to close; "
                                   "try again")
        self.reserve = open_reserve()
        if self.reserve is None:
            self._pause("out of file descriptors, with no idle RPC connection to close")

    def _pause(self, why: str) -> None:
        """Stop accepting for a second: the last resort, when nothing can be freed."""
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
        link = Link(time.monotonic())
        self.links[link] = asyncio.get_running_loop().create_task(self._serve(link, sock))

    def _drop(self, link: Link) -> None:
        """Close an idle link now (its descriptor is freed on the loop's next turn)."""
        self.links.pop(link, None)
        if link.writer is not None:
            link.writer.transport.abort()

    async def _serve(self, link: Link, sock: socket.socket) -> None:
        try:
            reader, link.writer = await asyncio.open_unix_connection(sock=sock, limit=rpc.MAX_MESSAGE)
        except OSError:
            sock.close()
            self.links.pop(link, None)
            return
        try:
            await serve_connection(reader, link.writer, self.handle, link)
        finally:
            self.links.pop(link, None)


def descriptor_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def reject(sock: socket.socket, code: str, message: str) -> None:
    """One error line to a peer we will not serve, then close (a full buffer loses the line, not the loop).

    What the peer already sent is read and dropped first: closing on unread data would make its next read
    fail with ECONNRESET instead of showing it the line and then the end."""
    try:
        sock.setblocking(False)
        sock.send(error_line(None, code, message))
        for _ in range(rpc.MAX_MESSAGE // 65536):
            if not sock.recv(65536):
                break
    except OSError:
        pass
    finally:
        sock.close()


# ---- one connection ------------------------------------------------------------------------------


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: rpc.Handler,
                           link: Link) -> None:
    """Answer requests on one connection, in order, until the client leaves, it idles out, or it subscribes."""
    try:
        while True:
            link.idle_since = time.monotonic()
            line = await next_request(reader, writer)
            if line is None:
                break
            link.idle_since = float("inf")
            request_id, reply = await answer(line, handle, writer)
            if reply is rpc.STREAM:
                writer.write(rpc.encode({"id": request_id, "result": "subscribed"}))
                return  # the bus writes to this connection from now on, and closes it
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)
        writer.close()  # what is still buffered goes out first
        await asyncio.wait_for(writer.wait_closed(), IDLE_TIMEOUT)
    except (ConnectionError, OSError, asyncio.TimeoutError):
        writer.transport.abort()


async def next_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
    """The next request line, or None when the connection is to be closed: the client left, sent nothing whole
    for IDLE_TIMEOUT, or sent what cannot be framed (it then gets a BAD_MESSAGE line)."""
    while True:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        except asyncio.LimitOverrunError:
            await say_last(writer, error_line(None, rpc.BAD_MESSAGE, f"message over {rpc.MAX_MESSAGE} bytes"))
            return None
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip() and not writer.is_closing():
                await say_last(writer, error_line(None, rpc.BAD_MESSAGE, "message not ended by a newline"))
            return None
        if line.strip():
            return line


async def say_last(writer: asyncio.StreamWriter, line: bytes) -> None:
    """Write a last line before the connection closes (the next message's start cannot be found)."""
    writer.write(line)
    await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)


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
