"""HTTP/2 on zttp (`--http2-engine zttp`, or `auto` with zttp installed): the same connection as h2conn.py, on zttp.

zttp (pip install 'prun-cluster[zttp]', Python 3.11 and later) parses frames, decodes and encodes HPACK,
keeps the streams' states and the windows, acknowledges PINGs and SETTINGS, and frames response data, for
about 1/40 of the CPU the h2 library spends on them (benchmarks/results/h2-library.md). Everything else is
H2Protocol's, unchanged: the streams' exchanges, the drain's GOAWAYs, the flood counters, the stalled-window
resets. ZttpConnection below answers the calls H2Protocol and StreamOutput make of h2's H2Connection.

Where zttp differs from h2, and what prun does about it:
- zttp acknowledges received DATA itself (the windows refill as the frames are read), so a stream's body
  cannot be held back alone: while some stream's app is more than HIGH_WATER behind, the whole connection
  stops reading (as an HTTP/1.1 connection does), and reads again once it has caught up or ended.
- zttp ends a connection (GOAWAY ENHANCE_YOUR_CALM) once 4,096 streams were opened on it, and once the
  client reset 256 streams: prun retires a connection before the first bound, with the drain's two GOAWAYs,
  so a client that opens many streams on one connection (h2load, a proxy's pool) moves to a new one and
  loses no stream.
- zttp announces 128 concurrent streams; prun announces --http2-max-streams in a second SETTINGS frame when
  it is lower (a higher value is capped at 128 by zttp: the streams beyond are refused).
- zttp sends nothing on a stream after it was reset, but does not refuse it either: H2Protocol never sends
  on a stream it has let go of.
- Request trailers, PRIORITY frames and empty DATA frames are read and dropped by zttp (they cost no Python).
"""

from __future__ import annotations

from typing import Any

import zttp
from h2.exceptions import StreamClosedError
from h2.settings import SettingCodes
from hyperframe.frame import PingFrame, SettingsFrame

from prun.runtime.http.h2conn import H2Protocol
from prun.runtime.http.settings import Settings

# What zttp announces and enforces itself (its Limits: max_concurrent_streams, max_streams).
ZTTP_CONCURRENT = 128
ZTTP_STREAMS = 4096
# Retiring a connection before zttp's bound of streams: from RETIRE_IDLE_ID on, one GOAWAY at the first
# moment no stream is in progress (as a drain does: clients on the h2 library fail the streams in flight on
# any GOAWAY); past RETIRE_NOW_ID, the drain's two GOAWAYs at once (the bound less two windows of concurrent
# streams: those the client sends before it reads the first GOAWAY and the PING after it).
RETIRE_IDLE_ID = 2 * 3000 - 1
RETIRE_NOW_ID = 2 * (ZTTP_STREAMS - 2 * ZTTP_CONCURRENT) - 1
_WINDOW = 4  # SETTINGS_INITIAL_WINDOW_SIZE


class ZttpConnection:
    """The calls H2Protocol (h2conn.py) and StreamOutput (h2output.py) make of h2's H2Connection, on zttp."""

    __slots__ = ("z", "highest_inbound_stream_id", "extra", "max_streams", "sid", "handle")
    max_outbound_frame_size = 1 << 30  # (zttp cuts response data into frames itself)

    def __init__(self, max_streams: int) -> None:
        self.z: Any = zttp.Connection(zttp.SERVER, protocol=zttp.HTTP2)
        self.highest_inbound_stream_id = 0
        self.extra = b""  # frames prun writes beside zttp's (its own SETTINGS, the drain's PING)
        self.max_streams = max_streams
        self.sid = 0  # the stream whose handle was asked for last (a response's calls come one after another)
        self.handle: Any = None

    def stream(self, sid: int) -> Any:
        """zttp's handle of stream `sid` (each of its calls checks the stream again)."""
        if sid != self.sid:
            self.sid = sid
            self.handle = self.z.stream(sid)
        return self.handle

    def initiate_connection(self) -> None:
        self.z.initiate_connection()
        if self.max_streams < ZTTP_CONCURRENT:
            self.extra += SettingsFrame(0, settings={SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams}).serialize()

    def data_to_send(self) -> bytes:
        data: bytes = self.z.data_to_send()
        if self.extra:
            data, self.extra = data + self.extra, b""
        return data

    def send_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        stream = self.stream(sid)
        name, value = headers[0]
        try:
            if name != b":status":
                stream.end_message(headers)  # trailers
            elif value[0] == 0x31:  # 1xx
                stream.send_informational(int(value), headers[1:])
            else:
                stream.send_response(int(value), headers[1:], end_stream)
        except zttp.ProtocolError as exc:
            raise StreamClosedError(sid) from exc

    def respond(self, sid: int, status: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        try:
            self.stream(sid).send_response(status, headers, end_stream)
        except zttp.ProtocolError as exc:
            raise StreamClosedError(sid) from exc

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        stream = self.stream(sid)
        try:
            stream.send_data(data)
            if end_stream:
                stream.end_message()
        except zttp.ProtocolError as exc:
            raise StreamClosedError(sid) from exc

    def end_stream(self, sid: int) -> None:
        try:
            self.stream(sid).end_message()
        except zttp.ProtocolError as exc:
            raise StreamClosedError(sid) from exc

    def reset_stream(self, sid: int, code: int) -> None:
        try:
            self.stream(sid).reset(code)
        except zttp.ProtocolError as exc:
            raise StreamClosedError(sid) from exc

    def local_flow_control_window(self, sid: int) -> int:
        window = self.stream(sid).send_window
        if window is None:
            raise StreamClosedError(sid)
        return min(int(window), int(self.z.send_window))

    def acknowledge_received_data(self, size: int, sid: int) -> None:
        pass  # (zttp refills the windows itself)

    def increment_flow_control_window(self, size: int) -> None:
        pass

    def ping(self, data: bytes) -> None:
        self.extra += PingFrame(0, opaque_data=data).serialize()


class ZttpProtocol(H2Protocol):
    """H2Protocol with zttp's connection: its events read here, its frames sent through ZttpConnection."""

    body_paused = False  # reading stopped while a stream's app is behind with its body

    def new_connection(self, settings: Settings) -> Any:
        return ZttpConnection(self.max_streams)

    def send_response(self, sid: int, status: int, headers: list[tuple[bytes, bytes]],
                      rest: list[tuple[bytes, bytes]], end: bool) -> None:
        if status < 200:
            self.conn.send_headers(sid, headers, end)
        else:
            self.conn.respond(sid, status, rest, end)

    frame_errors = (zttp.ProtocolError,)

    def read_frames(self, data: bytes | memoryview) -> None:
        conn = self.conn
        z = conn.z
        z.receive_data(data)
        while True:
            event = z.next_event()
            kind = type(event)
            if kind is _Request:
                sid = event.stream_id
                conn.highest_inbound_stream_id = sid
                self.on_request(sid, event.headers, event.end_stream, event.method, event.target)
                if sid > RETIRE_IDLE_ID:
                    self.retire(sid)
            elif kind is _Data:
                body = event.data
                self.on_data(event.stream_id, body, len(body), False)
            elif kind is _End:
                self.on_end(event.stream_id)
            elif kind is _NeedData:
                break
            elif kind is _Window:
                self.on_window(event.stream_id)
            elif kind is _Reset:
                self.on_reset(event.stream_id)
            elif kind is _Ping:
                if event.ack:
                    self.on_ping_ack(event.data)
                else:
                    self.count_control()
            elif kind is _Settings:
                self.on_settings(any(key == _WINDOW for key, _ in event.params))
            elif kind is _GoAway:
                self.on_terminated()
            elif kind is _Closed:
                break
            if self.closing and self.lingering:
                break

    def retire(self, sid: int) -> None:
        """Near zttp's bound of streams per connection: GOAWAY as a drain sends it; the client opens a new one."""
        if sid > RETIRE_NOW_ID:
            self.goaway_twice()
        else:
            self.draining = True  # (stream_gone: the last GOAWAY once no stream is in progress)

    # -- a connection that stops reading while a stream's app is behind --------------------------

    def on_data(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        super().on_data(sid, data, flow, ended)
        if self.held and not self.body_paused:
            self.body_paused = True
            self.transport.pause_reading()

    def maybe_resume_reading(self, force: bool = False) -> None:
        super().maybe_resume_reading(force)
        self.reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.body_paused:
            self.transport.pause_reading()

    def stream_gone(self) -> None:
        super().stream_gone()
        self.reading()

    def reading(self) -> None:
        if self.body_paused and not self.held:
            self.body_paused = False
            if not self.write_paused and not self.closed:
                self.transport.resume_reading()


_Request = zttp.Request
_Data = zttp.Data
_End = zttp.EndOfMessage
_NeedData = type(zttp.NEED_DATA)
_Window = zttp.WindowUpdate
_Reset = zttp.RstStream
_Ping = zttp.Ping
_Settings = zttp.Settings
_GoAway = zttp.GoAway
_Closed = type(zttp.CONNECTION_CLOSED)
