"""A small HTTP/2 client over a plain socket, on the h2 library, for tests and the reload benchmark.

H2Wire speaks HTTP/2 with prior knowledge (or over a TLS socket given to it), sends well-formed requests
through h2, and raw frames (hyperframe) where a test plays an attacker. H2Load keeps streams in flight
on several connections, opens a new connection when the server says GOAWAY, and counts every stream as
served, refused before the server processed it (REFUSED_STREAM, or above a GOAWAY's last stream id: RFC
9113 says those are safe to retry, and it retries them), or failed.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None  # the RST_STREAM error code, if the server reset the stream
    ended: bool = False
    informational: list[int] = field(default_factory=list)  # the 1xx statuses before the response

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class _Client(H2Connection):
    """h2's client connection, reading on after a GOAWAY: h2 closes its state at the first GOAWAY received and
    then refuses the frames of the streams the server still answers (RFC 9113 6.8 lets it send them)."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)  # type: ignore[misc]
        self.state_machine.state = ConnectionState.CLIENT_OPEN
        return result


class H2Wire:
    """One HTTP/2 connection to 127.0.0.1:port."""

    def __init__(self, port: int, sock: Any = None, settings: dict[int, int] | None = None, timeout: float = 10.0,
                 preface: bool = True) -> None:
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.conn = _Client(H2Configuration(client_side=True, header_encoding=None))
        self.responses: dict[int, Response] = {}
        self.goaway: ConnectionTerminated | None = None
        self.closed = False
        self.port = port
        if preface:
            self.conn.initiate_connection()
            if settings:
                self.conn.update_settings(settings)
            self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str = "/", method: str = "GET", body: bytes = b"",
                headers: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{self.port}")]
        self.conn.send_headers(sid, head + list(headers or []), end_stream=end and not body)
        self.responses[sid] = Response()
        if body:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Send `body` on stream `sid` as the server's windows allow (reading its WINDOW_UPDATEs meanwhile)."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.read_once()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(chunk), end_stream=end and not view)
        if end and not body:
            self.conn.end_stream(sid)
        self.flush()

    def send_raw(self, data: bytes) -> None:
        self.flush()
        self.sock.sendall(data)

    def read_once(self) -> bool:
        """Read and handle what the server sent; False once the connection is closed."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self.closed = True
            return False
        for event in events:
            self.handle(event)
        try:
            self.flush()
        except OSError:
            pass
        return True

    def handle(self, event: Any) -> None:
        sid = getattr(event, "stream_id", 0)
        response = self.responses.setdefault(sid, Response()) if sid else None
        if isinstance(event, ResponseReceived):
            assert response is not None
            response.headers = list(event.headers)
            response.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, InformationalResponseReceived):
            assert response is not None
            response.informational.append(int(dict(event.headers)[b":status"]))
        elif isinstance(event, DataReceived):
            assert response is not None
            response.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, TrailersReceived):
            assert response is not None
            response.trailers = list(event.headers)
        elif isinstance(event, StreamEnded):
            assert response is not None
            response.ended = True
        elif isinstance(event, StreamReset):
            assert response is not None
            response.reset = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.goaway = event

    def wait(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed or time.monotonic() > deadline:
                return bool(predicate())
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.read_once()
            except TimeoutError:
                pass
        return True

    def response(self, sid: int, timeout: float = 10.0) -> Response:
        response = self.responses[sid]
        self.wait(lambda: response.ended or response.reset is not None, timeout)
        return response

    def get(self, path: str = "/", timeout: float = 10.0, **kwargs: Any) -> Response:
        return self.response(self.request(path, **kwargs), timeout)

    def wait_goaway(self, timeout: float = 10.0) -> ConnectionTerminated | None:
        self.wait(lambda: self.goaway is not None, timeout)
        return self.goaway

    def wait_closed(self, timeout: float = 10.0) -> bool:
        return self.wait(lambda: self.closed, timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class H2Load:
    """Threads keeping `streams` requests in flight each, over HTTP/2 connections, until stopped."""

    def __init__(self, port: int, clients: int = 4, streams: int = 8, path: str = "/") -> None:
        self.port = port
        self.streams = streams
        self.path = path
        self.ok = self.refused = self.failed = self.connections = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> H2Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def count(self, ok: int = 0, refused: int = 0, failed: int = 0, error: str = "") -> None:
        with self.lock:
            self.ok += ok
            self.refused += refused
            self.failed += failed
            if error and len(self.errors) < 20:
                self.errors.append(error)

    def client(self) -> None:
        retry = 0  # streams the server did not process, to send again on the next connection
        while not self.stopping.is_set():
            try:
                wire = H2Wire(self.port, timeout=10)
            except OSError as exc:
                self.count(failed=1, error=f"connect: {exc!r}")
                time.sleep(0.05)
                continue
            with self.lock:
                self.connections += 1
            retry = self.run_connection(wire, retry)
            wire.close()

    def run_connection(self, wire: H2Wire, retry: int) -> int:
        """Serve streams on `wire` until GOAWAY, a close or the stop; the streams left to retry."""
        pending: set[int] = set()

        def top_up() -> None:
            nonlocal retry
            while (len(pending) < self.streams and wire.goaway is None and not self.stopping.is_set()
                   and not wire.closed):
                try:
                    pending.add(wire.request(self.path))
                except (ProtocolError, OSError):
                    return
                retry = max(0, retry - 1)

        try:
            top_up()
            while pending:
                if not wire.read_once():
                    break
                for sid in list(pending):
                    response = wire.responses[sid]
                    if response.ended:
                        pending.discard(sid)
                        if response.status == 200:
                            self.count(ok=1)
                        else:
                            self.count(failed=1, error=f"status {response.status}")
                    elif response.reset is not None:
                        pending.discard(sid)
                        if response.reset == ErrorCodes.REFUSED_STREAM:
                            self.count(refused=1)
                            retry += 1
                        else:
                            self.count(failed=1, error=f"reset {response.reset}")
                if wire.goaway is not None:
                    last = wire.goaway.last_stream_id
                    for sid in [s for s in pending if last is not None and s > last]:
                        pending.discard(sid)  # not processed: safe to send again (RFC 9113 6.8)
                        self.count(refused=1)
                        retry += 1
                top_up()
        except TimeoutError:
            self.count(failed=len(pending), error=f"timeout with {len(pending)} streams in flight")
            return retry
        except OSError as exc:
            self.count(failed=len(pending), error=f"{exc!r} with {len(pending)} streams in flight")
            return retry
        if pending:
            self.count(failed=len(pending), error=f"connection closed with {len(pending)} streams in flight")
        return retry
