"""The HTTP/2 protocol library's own cost per request, in one process, no sockets: what bounds prun's HTTP/2.

    python -m benchmarks.h2_library [--requests N] [--rounds R]

A client connection (the h2 library's) makes N GET requests on one connection, 10 in flight as h2load -m 10
sends them; the server side is measured alone: it takes the client's bytes, reads the events, and answers
each stream (a head and a 12-byte body), as prun's HTTP/2 connection does with the library. Libraries: h2
(what prun uses, prun-cluster[http2]) and zttp (a Zig core, alpha), when installed. Prints the server's
microseconds of CPU per request, median (min-max) of interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

BODY = b"Hello, world"
HEADERS = [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(BODY)))]


class Client:
    """The h2 library as a client (h2load's part), untimed: requests in batches of 10, the server's frames read."""

    def __init__(self) -> None:
        import h2.config
        import h2.connection

        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sid = 1

    def batch(self, count: int) -> bytes:
        for _ in range(count):
            self.conn.send_headers(self.sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                              (":authority", "127.0.0.1"), ("user-agent", "bench")], end_stream=True)
            self.sid += 2
        return self.conn.data_to_send()

    def read(self, data: bytes) -> None:
        self.conn.receive_data(data)
        for stream in list(self.conn.streams):  # streams ended on both sides: let them go
            self.conn.streams.pop(stream, None)


class H2Server:
    def __init__(self) -> None:
        import h2.config
        import h2.connection
        import h2.events

        self.events = h2.events
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.initiate_connection()

    def serve(self, data: bytes) -> tuple[bytes, int]:
        answered = 0
        for event in self.conn.receive_data(data):
            if isinstance(event, self.events.RequestReceived):
                self.conn.send_headers(event.stream_id, HEADERS)
                self.conn.send_data(event.stream_id, BODY, end_stream=True)
                answered += 1
        return self.conn.data_to_send(), answered


class ZttpServer:
    def __init__(self) -> None:
        import zttp

        self.zttp = zttp
        self.conn = zttp.Connection(zttp.SERVER, protocol=zttp.HTTP2)
        self.conn.initiate_connection()
        self.head = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]

    def serve(self, data: bytes) -> tuple[bytes, int]:
        answered = 0
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is self.zttp.NEED_DATA or event is None:
                break
            if isinstance(event, self.zttp.Request):
                stream = self.conn.stream(event.stream_id)
                stream.send_response(200, self.head)
                stream.send_data(BODY)
                stream.end_message()
                answered += 1
        return self.conn.data_to_send(), answered


PER_CONNECTION = 2000  # zttp 0.0.35 calls a connection's ~4,090th stream a flood (ENHANCE_YOUR_CALM)


def measure(server_type: type, requests: int, in_flight: int = 10) -> float:
    """The server's CPU seconds for `requests` requests, PER_CONNECTION to a connection, `in_flight` at a time."""
    spent = 0.0
    for start in range(0, requests, PER_CONNECTION):
        spent += measure_one(server_type, min(PER_CONNECTION, requests - start), in_flight)
    return spent


def measure_one(server_type: type, requests: int, in_flight: int) -> float:
    client, server = Client(), server_type()
    spent = 0.0
    answered = 0
    pending = client.conn.data_to_send()
    while answered < requests:
        pending += client.batch(min(in_flight, requests - answered))
        began = time.process_time()
        out, done = server.serve(pending)
        spent += time.process_time() - began
        answered += done
        client.read(out)
        pending = client.conn.data_to_send()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    servers: dict[str, type] = {"h2": H2Server}
    try:
        import zttp  # noqa: F401

        servers["zttp"] = ZttpServer
    except ImportError:
        print("zttp is not installed: measuring h2 alone")
    results: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, server_type in servers.items():
            results[name].append(measure(server_type, args.requests) / args.requests * 1e6)
    for name, values in results.items():
        print(f"{name:5} {statistics.median(values):7.1f} µs of CPU per request ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
