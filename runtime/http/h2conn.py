"""One HTTP/2 connection (RFC 9113) on the h2 library's sans-I/O H2Connection: streams, flow control, GOAWAY.

A connection becomes HTTP/2 in one of two ways, on the same listeners as HTTP/1.1: ALPN `h2` at the end
of a TLS handshake (server.py's AlpnProtocol), or the connection preface sent in clear text with prior
knowledge (protocol.py stops on it and calls take_over). `Upgrade: h2c` is not honoured (RFC 9113
deprecates it): such a request is answered over HTTP/1.1, as any other upgrade that is not a WebSocket.

Every stream is one Exchange (h2exchange.py), run by the same ASGI and WSGI adapters as an HTTP/1.1
request. Request bodies are flow-controlled per stream: received DATA is acknowledged (WINDOW_UPDATE) while
less than HIGH_WATER of it waits for the app, and held back beyond. Responses go out as the peer's windows
allow; an app's send waits while its stream's data waits for window.

Bounds against the known HTTP/2 attacks (each ends in GOAWAY where RFC 9113 makes it a connection error;
the worker's other connections are served meanwhile):
- rapid reset (CVE-2023-44487): at most --http2-max-streams streams per connection whose app is running,
  a reset one included (beyond, a new stream is refused with REFUSED_STREAM); more than RESETS_PER_SECOND
  client resets of streams in progress: GOAWAY ENHANCE_YOUR_CALM;
- CONTINUATION flood (CVE-2024-27316): h2 buffers at most 64 frames of one header block (then
  PROTOCOL_ERROR), and a header list bigger than HEADER_LIST_BOUND decoded is ENHANCE_YOUR_CALM;
- SETTINGS, PING, PRIORITY and empty DATA floods: more than CONTROL_PER_SECOND such frames: GOAWAY
  ENHANCE_YOUR_CALM; and reading stops while the client does not read what the worker writes;
- a zero window held forever: a stream whose data waits for window for --timeout-write is reset (CANCEL);
- HPACK bomb: the decoded header list is bounded (HEADER_LIST_BOUND), whatever the dynamic table holds;
- a header list over --limit-request-header-size: 431 on that stream; a :path over --limit-request-line:
  414; a body over --limit-request-body: 413 (or the stream reset once the response has begun).
"""

from __future__ import annotations

import asyncio
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from h2.settings import Settings as H2Settings
from hyperframe.frame import GoAwayFrame

from prun.runtime.http.exchange import write_stalled
from prun.runtime.http.h2output import StreamOutput
from prun.runtime.http.h2scope import request_scope
from prun.runtime.http.logs import log_line
from prun.runtime.http.settings import HIGH_WATER, LINGER_SECONDS, LOW_WATER, Settings, Shared, addresses, wake_all

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The window each stream starts with, and the connection's (all streams at once may fill theirs).
STREAM_WINDOW = HIGH_WATER
MAX_STREAM_ID = 2**31 - 1
# Client resets of streams still in progress, and control frames, per connection and second.
RESETS_PER_SECOND = 200
CONTROL_PER_SECOND = 1000
GOAWAY_PING = b"prun-bye"  # the PING sent with the first GOAWAY of a drain


def take_over(proto: Any, data: bytes | memoryview) -> bool:
    """Serve `proto`'s connection (an HttpProtocol that read the HTTP/2 preface) as HTTP/2 from now on.

    `data` is the read on which HTTP/1.1's parser stopped: the rest of the preface, then frames (skip_preface).
    """
    if proto.current is not None or proto.queue or proto.parsing is not None:
        return False  # the preface after an HTTP/1.1 request: not HTTP/2 with prior knowledge
    conn = proto.shared.h2_protocol_cls(proto.settings, proto.shared, proto.loop)
    proto.closing = proto.closed = True
    proto.parser = None
    if proto.host is not None:
        proto.shared.release_host(proto)
    proto.shared.protocols.discard(proto)
    transport = proto.transport
    transport.set_protocol(conn)
    if proto.read_paused:
        transport.resume_reading()
    conn.preface_left = True
    conn.connection_made(transport)
    conn.data_received(data)
    return True


class H2Protocol(StreamOutput, asyncio.Protocol):
    """Serves the streams of one HTTP/2 connection (what it sends on them: h2output.py)."""

    frame_errors: tuple[type[Exception], ...] = (ProtocolError,)  # what the library raises for a connection error

    def __init__(self, settings: Settings, shared: Shared, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.shared = shared
        self.loop = loop
        self.max_streams = settings.http2_max_streams
        self.conn: Any = self.new_connection(settings)
        self.transport: Any = None
        self.client: tuple[str, int] | None = None
        self.sockname: Any = None
        self.scheme = settings.scheme
        self.streams: dict[int, Any] = {}  # stream id -> its exchange, until its response has gone out
        self.apps = 0  # exchanges whose app call has not ended (a reset stream's included)
        self.blocked: dict[int, Any] = {}  # streams whose response data waits for flow-control window
        self.held: set[Any] = set()  # streams whose received data is not acknowledged yet (the app is behind)
        self.read_paused = False  # some stream holds back its acknowledgements (asgi.py and wsgi.py look)
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.batching = False  # in data_received: the frames to send go out once, at its end
        self.closing = False
        self.closed = False
        self.lingering = False
        self.preface_left = False  # taken over from HTTP/1.1: the preface's end is still to be skipped
        self.preface_read = b""  # ... and what was read of it so far
        self.queue: tuple[()] = ()  # (what exchange.py's Connection reads: HTTP/2 has no pipeline)
        self.head_since = 0.0  # (set by the WSGI adapter while it waits for a small body; not a clock here)
        self.idle_since = shared.clock
        self.resets = 0  # client resets of streams in progress this second
        self.control = 0  # control frames this second
        self.draining = False  # the worker drains: GOAWAY once no stream is in progress
        self.goaway_first = False  # the drain's first GOAWAY (every stream id) is out
        self.last_stream = MAX_STREAM_ID  # streams above this are refused (after the drain's last GOAWAY)
        self.write_left = 0
        self.write_since = 0.0
        self.date_key = b""
        self.date_headers: list[tuple[bytes, bytes]] = []
        # asgi.py's host task (one per connection, as for HTTP/1.1: an app that finishes in its first
        # step costs no Task).
        self.host: asyncio.Task[None] | None = None
        self.host_box: Any = None
        self.host_busy = False
        self.host_job: Any = None

    def new_connection(self, settings: Settings) -> Any:
        """The protocol library's connection state (h2's H2Connection; h2zttp.py gives zttp's instead)."""
        config = H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                                 normalize_outbound_headers=False)
        conn = H2Connection(config=config)
        conn.local_settings = H2Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: settings.limit_header,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
        })
        # What the HPACK decoder may inflate a header block to before the connection is torn down (a bomb);
        # a block over --limit-request-header-size but within this gets 431 on its stream only.
        conn.decoder.max_header_list_size = 4 * settings.limit_header + 4096
        return conn

    # -- connection events --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.client, self.sockname = addresses(transport)
        shared = self.shared
        if shared.make_host is not None:
            self.host = shared.make_host(self)
        self.conn.initiate_connection()
        # The connection window: every stream may fill its own without starving the others.
        self.conn.increment_flow_control_window(self.max_streams * STREAM_WINDOW)
        self.flush()
        shared.opened(self)
        if shared.draining:
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = self.closing = True
        self.abandon_streams()
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters)
        if self.host is not None and not self.host_busy:
            self.shared.release_host(self)
        self.shared.closed(self)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        # The client reads less than it asks for: stop reading its frames (PINGs and SETTINGS that each
        # want an answer included) until it has read what waits.
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closed:
            self.transport.resume_reading()
        waiters, self.drain_waiters = self.drain_waiters, []
        wake_all(waiters)
        for ex in list(self.streams.values()):
            if not ex.out:
                ex.wake_writers()

    # -- frames in ----------------------------------------------------------------------------------

    def data_received(self, data: bytes | memoryview) -> None:
        if self.closed or self.lingering:
            return  # (closing: what the client still sends is discarded)
        if self.preface_left:
            data = self.skip_preface(bytes(data))
            if not data:
                return
        self.batching = True
        try:
            self.read_frames(data)
        except self.frame_errors as exc:
            self.batching = False
            self.fail(f"HTTP/2 protocol error: {exc}")
            return
        finally:
            self.batching = False
        self.flush()

    def read_frames(self, data: bytes | memoryview) -> None:
        """The library reads the frames in `data`; each event it makes goes to its handler (h2's here;
        h2zttp.py reads zttp's)."""
        handlers = _HANDLERS
        for event in self.conn.receive_data(data):
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, event)
            if self.closing and self.lingering:
                break

    def skip_preface(self, data: bytes) -> bytes:
        """Taken over from HTTP/1.1: the library is given the whole preface, then the bytes after the client's.

        HTTP/1.1's parser stops on the preface at a point of its own (after its first line and blank line, or
        after `SM`...), so an earlier read may have held part of it: this read begins with the rest of the
        preface (the shortest rest that fits: the frames after it begin with a 0 byte, which the preface has
        none of), or is all preface, kept until the next read completes it.
        """
        data = self.preface_read + data
        for k in range(len(PREFACE) + 1):  # k: how much of the preface came in earlier reads
            rest = PREFACE[k:]
            if data.startswith(rest):
                self.preface_left = False
                self.preface_read = b""
                return PREFACE + data[len(rest) :]
            if rest.startswith(data):
                self.preface_read = data  # (cut within the preface: its rest comes with the next read)
                return b""
        self.fail("HTTP/2 preface malformed")
        return b""

    def on_request(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool, method: bytes = b"",
                   path: bytes = b"") -> None:
        shared = self.shared
        if sid > self.last_stream or self.lingering:
            self.refuse(sid)  # after the drain's last GOAWAY: the client retries it on a new connection
            return
        if self.apps >= self.max_streams:
            # Apps of reset streams still running count too (rapid reset): refused, the client may retry;
            # refusals count as resets (a client that respects MAX_CONCURRENT_STREAMS and resets nothing
            # is never refused).
            self.refuse(sid)
            self.resets += 1
            if self.resets > RESETS_PER_SECOND:
                self.enhance_calm(f"{self.resets} streams reset or refused within a second (rapid reset)")
            return
        status, scope, expect, head = request_scope(self, headers, method, path)
        if scope is None:
            self.respond_error(sid, status, head, not ended)
            return
        ex = shared.h2_exchange_cls(self, scope, True, expect)
        ex.stream_id = sid
        ex.live = True
        self.apps += 1
        self.streams[sid] = ex
        self.idle_since = 0.0
        if head:
            ex.head_only = True
        if ended:
            ex.complete()
        ex.run()

    def on_data(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        ex = self.streams.get(sid)
        if ex is None or ex.disconnected or ex.finished:
            if flow:
                self.ack(flow, sid)
            return
        if not data and not ended:
            self.count_control()
        ex.received += len(data)
        if ex.received > self.settings.limit_body:
            self.ack(flow, sid)
            self.body_too_large(ex)
            return
        if data:
            ex.feed(data)
        if flow:
            if ex.buffered <= HIGH_WATER:
                self.ack(flow, sid)
            else:
                ex.held += flow
                self.held.add(ex)
                self.read_paused = True

    def on_end(self, sid: int) -> None:
        ex = self.streams.get(sid)
        if ex is not None:
            ex.complete()

    def on_reset(self, sid: int) -> None:
        ex = self.streams.pop(sid, None)
        self.blocked.pop(sid, None)
        if ex is None:
            return
        self.held.discard(ex)
        ex.reset_done = True
        ex.disconnect()  # the app sees http.disconnect
        ex.wake_writers()
        if not ex.finished:
            self.resets += 1
            if self.resets > RESETS_PER_SECOND:
                self.enhance_calm(f"{self.resets} streams reset by the client within a second (rapid reset)")
        self.stream_gone()

    def on_window(self, sid: int) -> None:
        if sid:
            ex = self.blocked.get(sid)
            if ex is not None:
                self.push(ex)
        else:
            for ex in list(self.blocked.values()):
                self.push(ex)

    def on_settings(self, window_changed: bool) -> None:
        self.count_control()
        if window_changed:
            for ex in list(self.blocked.values()):
                self.push(ex)

    def on_ping_ack(self, data: bytes) -> None:
        if data == GOAWAY_PING and self.goaway_first and self.last_stream == MAX_STREAM_ID:
            self.goaway_last()

    def on_terminated(self) -> None:
        # The client's GOAWAY: no new stream will come; close once the ones in progress are answered.
        self.last_stream = min(self.last_stream, self.conn.highest_inbound_stream_id)
        if not self.streams:
            self.close_gracefully()

    def count_control(self) -> None:
        self.control += 1
        if self.control > CONTROL_PER_SECOND:
            self.enhance_calm(f"{self.control} control frames within a second (a SETTINGS, PING or PRIORITY flood)")

    # -- flow control of request bodies -------------------------------------------------------------

    def ack(self, size: int, sid: int) -> None:
        try:
            self.conn.acknowledge_received_data(size, sid)
        except (StreamClosedError, ProtocolError):
            pass
        if not self.batching:
            self.flush()

    def maybe_resume_reading(self, force: bool = False) -> None:
        """Acknowledge the data of streams whose app has taken it (below LOW_WATER; any, if `force`)."""
        for ex in list(self.held):
            if force or ex.buffered < LOW_WATER or ex.disconnected:
                self.held.discard(ex)
                size, ex.held = ex.held, 0
                if size and not self.closed and ex.stream_id in self.streams:
                    self.ack(size, ex.stream_id)
        self.read_paused = bool(self.held)

    def pause_reading(self) -> None:
        pass  # (HTTP/2 holds back a stream's window, never the whole connection: see on_data)

    # -- streams ending ----------------------------------------------------------------------------

    def stream_gone(self) -> None:
        if not self.streams:
            self.idle_since = self.shared.clock
            if self.draining and self.last_stream == MAX_STREAM_ID and not self.goaway_first:
                self.goaway_last()
            elif self.last_stream != MAX_STREAM_ID or self.closing:
                self.close_gracefully()

    def app_ended(self, ex: Any) -> None:
        if ex.live:
            ex.live = False
            self.apps -= 1

    # -- backpressure for the app's sends -----------------------------------------------------------

    async def drain_writes(self) -> None:
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self.drain_waiters.append(waiter)
            await waiter

    # -- closing, drain, the once-a-second sweep -----------------------------------------------------

    def fail(self, why: str) -> None:
        """A connection error: h2 has queued its GOAWAY; send it and close."""
        logged = self.shared.h2_logged
        if why not in logged and len(logged) < 64:
            logged.add(why)
            log_line(f"closed an HTTP/2 connection from {self.peer()}: {why} (logged once)")
        self.flush()
        self.abandon_streams()
        self.close_gracefully()

    def enhance_calm(self, why: str) -> None:
        if self.closing:
            return
        self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, self.conn.highest_inbound_stream_id)
        self.fail(why)

    def abandon_streams(self) -> None:
        for ex in list(self.streams.values()):
            ex.disconnect()
            ex.wake_writers()
        self.streams.clear()
        self.blocked.clear()
        self.held.clear()

    def goaway(self, code: int, last: int) -> None:
        """A GOAWAY frame, written beside h2 (whose state would refuse every frame after one it sent itself)."""
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = last
        frame.error_code = code
        if not self.closed and not self.lingering:
            self.transport.write(frame.serialize())

    def drain(self) -> None:
        """The worker drains: GOAWAY at once if no stream is in progress, else when none is (stream_gone).

        A GOAWAY while streams are in flight is sent only once the drain window ends (close_if_idle):
        some clients (those on the h2 library, httpx among them) fail every stream still in flight when
        a GOAWAY comes, whatever its last stream id.
        """
        if self.closed or self.draining:
            return
        self.draining = True
        if not self.streams:
            self.goaway_last()

    def goaway_twice(self) -> None:
        """GOAWAY for every stream id and a PING; the last GOAWAY when the PING comes back (RFC 9113 6.8):
        requests the client sent meanwhile are served, not refused."""
        if self.closed or self.goaway_first or self.last_stream != MAX_STREAM_ID:
            return
        self.goaway_first = True
        self.goaway(ErrorCodes.NO_ERROR, MAX_STREAM_ID)
        self.conn.ping(GOAWAY_PING)
        self.flush()

    def goaway_last(self) -> None:
        """The last GOAWAY: the streams up to the last one received are served, later ones refused."""
        if self.closed or self.last_stream != MAX_STREAM_ID:
            return
        self.last_stream = self.conn.highest_inbound_stream_id
        self.goaway(ErrorCodes.NO_ERROR, self.last_stream)
        if not self.streams:
            self.close_gracefully()

    def close_if_idle(self) -> None:
        """End of the drain window: streams still in flight get the two GOAWAYs; close once they are answered."""
        self.draining = True
        if self.streams:
            self.goaway_twice()
        else:
            self.goaway_last()

    def close_gracefully(self) -> None:
        self.closing = True
        if self.closed or self.lingering:
            return
        self.lingering = True
        self.idle_since = self.shared.clock
        self.flush()
        transport = self.transport
        if transport.can_write_eof():
            try:
                transport.write_eof()
                return
            except (OSError, RuntimeError):
                pass
        transport.close()

    def sweep(self, now: float) -> None:
        """Once a second: the flood counters, stalled clients and streams, idle connections."""
        if self.closed:
            return
        self.resets = self.control = 0
        settings = self.settings
        left = self.transport.get_write_buffer_size()
        if left:
            if write_stalled(self, left, now, settings.timeout_write):
                log_line(f"closed an HTTP/2 connection from {self.peer()}: it read nothing of what waits for it "
                         f"({left} bytes) for {settings.timeout_write:g} s")
                self.transport.abort()
            return
        self.write_left = 0
        timeout = settings.timeout_write
        if timeout:
            for ex in list(self.blocked.values()):
                if ex.blocked_since and now - ex.blocked_since >= timeout:
                    log_line(f"reset an HTTP/2 stream from {self.peer()}: its window stayed shut for "
                             f"{timeout:g} s ({len(ex.out)} bytes waiting)")
                    self.reset_exchange(ex)
        since = self.idle_since
        if since and not self.streams and now - since >= (LINGER_SECONDS if self.lingering else settings.keepalive):
            if self.lingering:
                self.transport.abort()
            else:
                self.goaway(ErrorCodes.NO_ERROR, self.conn.highest_inbound_stream_id)
                self.close_gracefully()

    def peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a unix socket"


# h2's events, each to the H2Protocol method that takes it.
_HANDLERS: dict[type, Any] = {
    RequestReceived: lambda p, e: p.on_request(e.stream_id, e.headers, e.stream_ended is not None),
    DataReceived: lambda p, e: p.on_data(e.stream_id, e.data, e.flow_controlled_length, e.stream_ended is not None),
    StreamEnded: lambda p, e: p.on_end(e.stream_id),
    StreamReset: lambda p, e: p.on_reset(e.stream_id),
    WindowUpdated: lambda p, e: p.on_window(e.stream_id),
    RemoteSettingsChanged: lambda p, e: p.on_settings(SettingCodes.INITIAL_WINDOW_SIZE in e.changed_settings),
    PingReceived: lambda p, e: p.count_control(),
    PriorityUpdated: lambda p, e: p.count_control(),
    PingAckReceived: lambda p, e: p.on_ping_ack(e.ping_data),
    ConnectionTerminated: lambda p, e: p.on_terminated(),
    # (TrailersReceived: ASGI has no request trailers; StreamEnded follows)
}
