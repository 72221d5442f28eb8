"""What an HTTP/2 connection sends on its streams: response heads (with the date and server), data as the
peer's windows allow, trailers, 100 Continue, resets, and the server's own error answers.

A mixin of H2Protocol (h2conn.py), which owns the state it uses; h2exchange.py calls these for each
stream's exchange.
"""

from __future__ import annotations

import asyncio
from typing import Any

from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError

from prun.runtime.http.settings import HEAD_CACHE_SIZE, Settings, Shared

_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_STATUS = {code: str(code).encode() for code in range(100, 600)}


class StreamOutput:
    """The sending half of H2Protocol."""

    conn: H2Connection
    settings: Settings
    shared: Shared
    loop: asyncio.AbstractEventLoop
    transport: Any
    streams: dict[int, Any]
    blocked: dict[int, Any]
    held: set[Any]
    write_paused: bool
    batching: bool
    closed: bool
    lingering: bool
    date_key: bytes
    date_headers: list[tuple[bytes, bytes]]

    def app_ended(self, ex: Any) -> None:
        raise NotImplementedError

    def stream_gone(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed and not self.lingering:
            self.transport.write(data)

    def sent(self) -> None:
        """Frames were queued in h2 outside data_received (an app task's send): write them now."""
        if not self.batching:
            self.flush()

    def response_headers(self, ex: Any, body: bytes, end: bool) -> bool:
        """Send the response head of `ex` (its status and headers, with the date and server); whether it
        ended the stream (`end`, and no body follows)."""
        status = ex.status
        shared = self.shared
        # Apps answer with the same few heads over and over: the header list built for one (with the Date,
        # which is why the cache is emptied every second, as HTTP/1.1's) is reused for the same status and
        # headers.
        given = tuple(ex.resp_headers)  # (any iterable of pairs: read once)
        if given and type(given[0]) is not tuple:
            given = tuple(map(tuple, given))  # pairs given as lists
        key: Any = (status, given)
        try:
            cached = shared.h2_heads.get(key)
        except TypeError:  # a name or value that is not hashable (a bytearray): build the list as usual
            key = cached = None
        if cached is None:
            cached = self.header_list(status, given)
            if key is not None and len(shared.h2_heads) < HEAD_CACHE_SIZE:
                shared.h2_heads[key] = cached
        headers, rest, length = cached
        if status < 200 or status == 204 or status == 304:
            ex.head_only = True
        ex.length = length
        end = end and (not body or ex.head_only)
        try:
            self.send_response(ex.stream_id, status, headers, rest, end)
        except (StreamClosedError, ProtocolError):
            ex.disconnect()
            return False
        if end:
            ex.out_end = 2
        self.sent()
        return end

    def send_response(self, sid: int, status: int, headers: list[tuple[bytes, bytes]],
                      rest: list[tuple[bytes, bytes]], end: bool) -> None:
        """Send a response head: `headers` begins with :status, `rest` is what follows it (h2zttp.py sends that)."""
        self.conn.send_headers(sid, headers, end_stream=end)

    def header_list(self, status: int, given: Any) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], int]:
        """The HTTP/2 header list of a response (its :status, its headers lower-cased without the hop-by-hop
        ones, the date and server), the same without :status, and its content-length (-1: none)."""
        headers = [(b":status", _STATUS.get(status) or str(status).encode())]
        length = -1
        for name, value in given:
            name = name.lower()
            if name in _HOP:
                continue
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
                raise ValueError("response header names and values must not contain CR or LF")
            if name == b"content-length":
                length = int(value)
            headers.append((name, value))
        shared = self.shared
        if shared.date_server is not self.date_key:
            self.date_key = shared.date_server
            self.date_headers = [(name, value) for name, _, value in
                                 (line.partition(b": ") for line in shared.date_server.split(b"\r\n") if line)]
        headers += self.date_headers
        return headers, headers[1:], length

    def informational(self, ex: Any, status: int) -> None:
        try:
            self.conn.send_headers(ex.stream_id, [(b":status", _STATUS[status])])
        except (StreamClosedError, ProtocolError):
            return
        self.sent()

    def trailers(self, ex: Any, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            self.conn.send_headers(ex.stream_id, [(n.lower(), v) for n, v in headers], end_stream=True)
        except (StreamClosedError, ProtocolError):
            ex.disconnect()
            return
        self.sent()

    def push(self, ex: Any) -> None:
        """Send what waits of `ex`'s response data, as far as the windows and frame size allow."""
        conn = self.conn
        sid = ex.stream_id
        out = ex.out
        try:
            while out:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = out[:window]
                out = out[window:]
                conn.send_data(sid, chunk, end_stream=not out and ex.out_end)
                ex.blocked_since = 0.0
            if not out and ex.out_end == 1:
                ex.out_end = 2
        except (StreamClosedError, ProtocolError):
            out = b""
            ex.disconnect()
        ex.out = out
        if out:
            if sid not in self.blocked:
                self.blocked[sid] = ex
                ex.blocked_since = self.shared.clock
        else:
            self.blocked.pop(sid, None)
            if not self.write_paused:
                ex.wake_writers()
            if ex.out_end and ex.finished:
                self.stream_done(ex)
        self.sent()

    def end_empty(self, ex: Any) -> None:
        """End `ex`'s response stream with no more data."""
        if ex.out:
            ex.out_end = 1
            return
        ex.out_end = 2
        try:
            self.conn.end_stream(ex.stream_id)
        except (StreamClosedError, ProtocolError):
            ex.disconnect()
        self.sent()

    def stream_done(self, ex: Any) -> None:
        """The response of `ex` has gone out whole: count it, log it, forget the stream."""
        if self.streams.pop(ex.stream_id, None) is None:
            return
        self.blocked.pop(ex.stream_id, None)
        self.held.discard(ex)
        self.app_ended(ex)  # (an app that completed inline never calls app_done)
        self.shared.served(ex, self.settings.access_log, self.loop.time() - ex.start_time)
        if not ex.body_complete and not ex.reset_done:
            # Answered before the client sent its whole body: tell it to stop (RFC 9113 8.1).
            self.reset(ex.stream_id, ErrorCodes.NO_ERROR)
        self.stream_gone()

    def reset(self, sid: int, code: int = ErrorCodes.CANCEL) -> None:
        try:
            self.conn.reset_stream(sid, code)
        except (StreamClosedError, ProtocolError):
            pass
        self.sent()

    def refuse(self, sid: int) -> None:
        self.reset(sid, ErrorCodes.REFUSED_STREAM)

    def reset_exchange(self, ex: Any, code: int = ErrorCodes.CANCEL) -> None:
        """Abandon `ex`'s stream (an app that failed mid-response, a body too large once answered)."""
        ex.disconnect()
        ex.out = b""
        ex.wake_writers()
        if self.streams.pop(ex.stream_id, None) is not None:
            self.blocked.pop(ex.stream_id, None)
            self.held.discard(ex)
            self.reset(ex.stream_id, code)
            self.stream_gone()

    def respond_error(self, sid: int, status: int, head_only: bool, body_open: bool) -> None:
        """A small plain-text response the server makes itself, on stream `sid` (`body_open`: the client may
        still be sending its body)."""
        from http import HTTPStatus

        body = b"" if head_only else HTTPStatus(status).phrase.encode() + b"\n"
        headers = [(b":status", _STATUS[status]), (b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(HTTPStatus(status).phrase) + 1).encode())]
        try:
            self.conn.send_headers(sid, headers, end_stream=not body)
            if body:
                self.conn.send_data(sid, body, end_stream=True)
        except (StreamClosedError, ProtocolError):
            return
        self.shared.counted()
        if body_open:
            self.reset(sid, ErrorCodes.NO_ERROR)  # the client may still be sending its body
        self.sent()

    def body_too_large(self, ex: Any) -> None:
        if ex.head_sent:
            self.reset_exchange(ex)
            return
        ex.disconnect()
        ex.started = ex.finished = ex.head_sent = True
        ex.status = 413
        ex.wake_writers()
        if self.streams.pop(ex.stream_id, None) is not None:
            self.blocked.pop(ex.stream_id, None)
            self.held.discard(ex)
            self.respond_error(ex.stream_id, 413, ex.head_only, True)
            self.stream_gone()
