"""The WebSocket opening handshake, on the websockets library's sans-I/O ServerProtocol.

An HTTP connection whose request asks for `Upgrade: websocket` is handed here by protocol.py (only on
that path: plain requests never touch this module). The handshake is checked by ServerProtocol.accept
before the app sees anything; a handshake it refuses (a bad key, an unsupported version: 400/426) is
answered with its response and logged once per reason. An accepted one becomes a WebSocket connection
(websocket.py), with the extensions the handshake negotiated (permessage-deflate).
"""

from __future__ import annotations

from typing import Any

from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from prun.runtime.http.exchange import status_line, write_error
from prun.runtime.http.logs import log_line
from prun.runtime.http.settings import Settings, Shared
from prun.runtime.http.websocket import ENCODING, WebSocket


def upgrade(proto: Any, scope: dict[str, Any], rest: bytes) -> None:
    """Take over `proto`'s connection for the WebSocket its request (`scope`, an http scope) asks for."""
    settings: Settings = proto.settings
    shared: Shared = proto.shared
    proto.closing = True
    if shared.draining:
        write_error(proto, 503)
        proto.close_gracefully()
        return
    server = ServerProtocol(extensions=[ServerPerMessageDeflateFactory()], max_size=settings.ws_max_size,
                            select_subprotocol=lambda _protocol, _offered: None)
    headers = Headers([(name.decode(ENCODING), value.decode(ENCODING)) for name, value in scope["headers"]])
    target = scope["raw_path"].decode(ENCODING)
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode(ENCODING)
    if headers.get("Sec-WebSocket-Version", "13").strip() != "13":
        refuse(proto, Response(426, "Upgrade Required", Headers([("Sec-WebSocket-Version", "13")]), b""),
               "unsupported Sec-WebSocket-Version (13 is)")
        return
    response = server.accept(Request(target, headers))
    if response.status_code != 101:
        refuse(proto, response, str(server.handshake_exc or response.reason_phrase))
        return
    offered = [p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")]
    ws_scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": scope["http_version"],
        "scheme": "wss" if scope["scheme"] == "https" else "ws",
        "server": scope["server"],
        "client": scope["client"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "raw_path": scope["raw_path"],
        "query_string": scope["query_string"],
        "headers": scope["headers"],
        "subprotocols": [p for p in offered if p],
        "extensions": {"websocket.http.response": {}},
        "state": scope["state"],
    }
    # The negotiated extensions (permessage-deflate, if the client offered it) are the handshake's
    # outcome: frames are read and written by wsframes.py, not by `server`.
    ws = WebSocket(proto, response, list(server.extensions), ws_scope)
    # The HttpProtocol leaves the connection: its host task ends, the WebSocket takes its place in the count.
    proto.closed = True
    if proto.host is not None:
        proto.host.cancel()
        proto.host = None
    shared.protocols.discard(proto)
    shared.protocols.add(ws)
    proto.transport.set_protocol(ws)
    if proto.read_paused:
        proto.read_paused = False
        proto.transport.resume_reading()
    if rest:
        ws.data_received(rest)
    ws.start()


def refuse(proto: Any, response: Response, why: str) -> None:
    """Answer a handshake the library (or prun) refuses with its response, then close; log why once."""
    shared: Shared = proto.shared
    if why not in shared.ws_refused:
        shared.ws_refused.add(why)
        log_line(f"refused a WebSocket upgrade from {proto.peer()}: {why} "
                 f"(answered {response.status_code}; logged once)")
    head = [status_line(response.status_code), shared.date_server]
    for name, value in response.headers.raw_items():
        if name.lower() not in ("content-length", "connection", "date"):
            head.append(f"{name}: {value}\r\n".encode(ENCODING))
    head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(response.body))
    proto.transport.write(b"".join(head) + response.body)
    shared.counted()
    proto.close_gracefully()
