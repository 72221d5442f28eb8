"""RFC 6455 frames: read from a client with bounded memory, and written to it.

prun reads frames itself. wshandshake.py still uses the websockets library for the opening handshake, and
its permessage-deflate extension inflates and deflates frames here, but not its sans-I/O frame parser,
which (websockets 13-17) keeps each fragment of a message as an object of its own and never counts an
empty one against --ws-max-size, checks a text message's UTF-8 only once the message has ended, fails a
close frame that arrives between two fragments with 1002 (control frames may come between fragments,
RFC 6455 5.4; Autobahn 7.1.5 expects the close echoed), and parses a whole read in one call, with no way
to stop between two frames.

Bounds, per connection (FrameReader):
- a message: --ws-max-size bytes of payload (inflated, with permessage-deflate), kept in one bytearray,
  and at most MAX_FRAGMENTS frames, empty ones included: beyond either, 1009;
- a frame's announced length is checked against what is left of the message's budget before any of its
  payload is buffered, and a frame is kept only until it is complete;
- a text message's UTF-8 is checked fragment by fragment: 1007 as soon as the bytes are invalid.

The caller stops asking for frames whenever it must (the app's queue is full, the client reads nothing of
what is written to it): what is left unparsed is one read at most.
"""

from __future__ import annotations

import codecs
import struct
import sys
from typing import Any

from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions import Extension
from websockets.frames import Close, Frame, Opcode

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the library built without its C extension
    from websockets.utils import apply_mask

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Frames in one message, empty ones included: as the websockets library's own connections (and so
# uvicorn's) allow. A client that streams a 16 MiB message in 4 KiB frames stays within it.
MAX_FRAGMENTS = 4096
_NO_LIMIT = sys.maxsize
_utf8 = codecs.getincrementaldecoder("utf-8")


class Failure(Exception):
    """The client broke the protocol or a bound: fail the connection with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class FrameReader:
    """Turns the bytes a client sends into its messages, pings, pongs and close, one at a time (next).

    Hot path (a WebSocket's every message): the header is read from the buffer byte by byte, and a
    message in one frame is returned without being copied again.
    """

    __slots__ = ("buffer", "max_size", "extensions", "opcode", "message", "fragments", "decoder")

    def __init__(self, max_size: int | None, extensions: list[Extension]) -> None:
        self.buffer = bytearray()  # received, not parsed yet
        self.max_size = max_size or _NO_LIMIT
        self.extensions = extensions  # negotiated in the handshake (permessage-deflate), or none
        self.opcode = 0  # TEXT or BINARY while a fragmented message is open, else 0
        self.message = bytearray()  # the open message's payload so far
        self.fragments = 0  # its frames so far
        self.decoder: Any = None  # the open text message's UTF-8 check

    def next(self) -> tuple[int, Any] | None:
        """The next complete event, or None until more bytes arrive: (TEXT, str), (BINARY, bytes),
        (PING, bytes), (PONG, bytes) or (CLOSE, websockets Close). Raises Failure."""
        buf = self.buffer
        while True:
            have = len(buf)
            if have < 2:
                return None
            b0 = buf[0]
            b1 = buf[1]
            if not b1 & 0x80:
                raise Failure(1002, "incorrect masking")
            length = b1 & 0x7F
            head = 6
            if length >= 126:
                head = 8 if length == 126 else 14
                if have < head:
                    return None
                length = int.from_bytes(buf[2 : head - 4], "big")
                if length >> 63:
                    raise Failure(1002, "invalid frame length")
            opcode = b0 & 0x0F
            rsv = b0 & 0x70
            self.check_head(opcode, b0 & 0x80, rsv, length)
            end = head + length
            if have < end:
                return None
            with memoryview(buf) as view:
                payload = apply_mask(view[head:end], bytes(view[head - 4 : head]))
            del buf[:end]
            if opcode >= 8:
                if opcode == CLOSE:
                    return CLOSE, parse_close(payload)
                return opcode, payload
            if self.extensions:
                payload = self.inflate(opcode, payload, bool(b0 & 0x80), bool(rsv))
            event = self.data_frame(opcode, b0 & 0x80, payload)
            if event is not None:
                return event

    def check_head(self, opcode: int, fin: int, rsv: int, length: int) -> None:
        """Refuse a frame from its header alone, before any of its payload is kept."""
        if opcode >= 8:
            if opcode > PONG:
                raise Failure(1002, "invalid opcode")
            if length > 125:
                raise Failure(1002, "control frame too long")
            if not fin:
                raise Failure(1002, "fragmented control frame")
            if rsv:
                raise Failure(1002, "reserved bits must be 0")
            return
        if opcode > BINARY:
            raise Failure(1002, "invalid opcode")
        if opcode == CONT:
            if not self.opcode:
                raise Failure(1002, "unexpected continuation frame")
            if self.fragments >= MAX_FRAGMENTS:
                raise Failure(1009, "too many fragments")
        elif self.opcode:
            raise Failure(1002, "expected a continuation frame")
        # RSV1 marks the first frame of a compressed message, and only with permessage-deflate.
        if rsv and (rsv != 0x40 or opcode == CONT or not self.extensions):
            raise Failure(1002, "reserved bits must be 0")
        if length > self.max_size - len(self.message):
            raise Failure(1009, f"message over {self.max_size} bytes")

    def inflate(self, opcode: int, payload: bytes, fin: bool, rsv1: bool) -> bytes:
        """A data frame's payload through the negotiated extensions (permessage-deflate)."""
        budget = self.max_size - len(self.message)
        frame = Frame(Opcode(opcode), payload, fin, rsv1)
        try:
            for extension in reversed(self.extensions):
                # (max_size=0 would mean no limit to zlib: a budget of 0 still refuses a byte)
                frame = extension.decode(frame, max_size=None if budget == _NO_LIMIT else max(budget, 1))
        except PayloadTooBig:
            raise Failure(1009, f"message over {self.max_size} bytes") from None
        except ProtocolError as exc:
            raise Failure(1002, str(exc)) from None
        if len(frame.data) > budget:
            raise Failure(1009, f"message over {self.max_size} bytes")
        return bytes(frame.data)

    def data_frame(self, opcode: int, fin: int, payload: bytes) -> tuple[int, Any] | None:
        """A text, binary or continuation frame (its header checked): the message it completes, or None."""
        if opcode != CONT:
            if fin:  # a message in one frame, the usual case
                if opcode == BINARY:
                    return BINARY, payload
                try:
                    return TEXT, payload.decode()
                except UnicodeDecodeError as exc:
                    raise Failure(1007, f"invalid UTF-8 at position {exc.start}") from None
            self.opcode = opcode
            self.fragments = 1
            self.message += payload
            if opcode == TEXT:
                self.decoder = _utf8()
                self.check_text(payload, False)
            return None
        self.fragments += 1
        self.message += payload
        if self.decoder is not None:
            self.check_text(payload, bool(fin))
        if not fin:
            return None
        message, opcode = self.message, self.opcode
        self.message, self.opcode, self.fragments, self.decoder = bytearray(), 0, 0, None
        if opcode == BINARY:
            return BINARY, bytes(message)
        return TEXT, message.decode()  # (checked as it came)

    def check_text(self, payload: bytes, final: bool) -> None:
        """Fail as soon as a text message's bytes cannot be UTF-8 (Autobahn 6.4: fail fast)."""
        before = len(self.message) - len(payload)
        try:
            self.decoder.decode(payload, final)
        except UnicodeDecodeError as exc:
            raise Failure(1007, f"invalid UTF-8 at position {before + exc.start}") from None

    def abandon(self) -> None:
        """Drop the open message and what is buffered (the connection closes)."""
        self.buffer = bytearray()
        self.message, self.opcode, self.fragments, self.decoder = bytearray(), 0, 0, None


def parse_close(payload: bytes) -> Close:
    """A close frame's code and reason, checked (1002: a bad code or length, 1007: a reason not UTF-8)."""
    try:
        return Close.parse(payload)
    except ProtocolError as exc:
        raise Failure(1002, str(exc)) from None
    except UnicodeDecodeError:
        raise Failure(1007, "invalid UTF-8 in the close reason") from None


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked frame with FIN set, as a server sends it (without extensions)."""
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, length))
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return b"".join((head, payload))  # (any bytes-like payload: an app may send a bytearray or a memoryview)


def data_frame(opcode: int, payload: bytes, extensions: list[Extension]) -> bytes:
    """A text or binary message in one frame, through the negotiated extensions (permessage-deflate)."""
    if not extensions:
        return frame(opcode, payload)
    return Frame(Opcode(opcode), payload).serialize(mask=False, extensions=extensions)


def close_frame(code: int, reason: str) -> bytes:
    """A close frame (raises websockets' ProtocolError for a code that may not be sent)."""
    return frame(CLOSE, Close(code, reason).serialize())
