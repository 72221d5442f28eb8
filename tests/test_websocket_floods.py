"""One unauthenticated WebSocket client flooding a real prun worker, from a raw socket: fragments of a
message that never ends, and pings whose pongs it never reads. The worker's memory stays bounded, the
client is closed, and the worker (the same pid) serves a fresh client with its fds back where they were.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tests.support import LoneWorker, Prun, running
from tests.ws_wire import CONT, PING, TEXT, RawWebSocket, frame

WRITE_TIMEOUT = 3.0
MiB = 1 << 20


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Prun, int]]:
    """A worker with the default --ws-max-size (16 MiB): 2,000,000 one-byte fragments fit in it."""
    with running("wsapp:app", "-i", "1", "-b", "127.0.0.1:0", "--timeout-write", str(WRITE_TIMEOUT),
                 "--ws-ping-interval", "0") as master:
        yield master, master.wait_ready()


def fresh_clients_are_served(port: int) -> None:
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10) as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read() == b"plain"


class Pump(threading.Thread):
    """Sends `data` over and over from a thread, until `count` copies are sent, the socket fails, or stop."""

    def __init__(self, client: RawWebSocket, data: bytes, count: int) -> None:
        super().__init__(daemon=True)
        self.client, self.data, self.count = client, data, count
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while self.sent < self.count and not self.stop.is_set():
                self.client.sock.sendall(self.data)
                self.sent += 1
        except OSError:
            pass


@pytest.mark.parametrize("payload", [b"a", b""], ids=["one-byte", "empty"])
def test_a_fragment_flood_is_closed_1009_at_the_fragment_cap_with_bounded_memory(
    served: tuple[Prun, int], payload: bytes
) -> None:
    """The issue's flood: up to 2,000,000 continuation fragments of one byte (the worker grew 112 MiB) or
    of none (21 MiB, and never closed): the 4,097th fragment closes the connection with 1009."""
    master, port = served
    fresh_clients_are_served(port)
    worker = LoneWorker(master)
    batch = frame(CONT, payload, fin=False) * 10000
    with RawWebSocket(port, timeout=20) as client:
        client.send(frame(TEXT, b"open", fin=False))
        pump = Pump(client, batch, 200)
        pump.start()
        try:
            assert client.read_close() == (1009, "too many fragments")
        finally:
            pump.stop.set()
            pump.join(20)
    grown = worker.check(8 * MiB, "a fragment flood")
    print(f"fragments sent: {pump.sent * 10000:,}; worker grew {grown / MiB:.1f} MiB")
    fresh_clients_are_served(port)


def test_a_ping_flood_that_reads_no_pong_stops_being_read_and_is_dropped_after_timeout_write(
    served: tuple[Prun, int],
) -> None:
    """The issue's flood: pings sent without ever reading a pong (300,000: the worker grew 57 MiB, and was
    never dropped, as its backlog kept changing). Reading pauses once the pongs waiting pass the write
    buffer's high-water mark: the client's sends block well before 300,000 pings, and --timeout-write
    drops it although the backlog grew meanwhile."""
    master, port = served
    fresh_clients_are_served(port)
    worker = LoneWorker(master)
    mark = master.mark()
    ping = frame(PING, b"p" * 125)
    with RawWebSocket(port, timeout=1.0, rcvbuf=4096) as client:
        started = time.monotonic()
        sent = 0
        try:
            while sent < 300_000:
                client.sock.sendall(ping * 1000)  # blocks once the worker stops reading
                sent += 1000
        except TimeoutError:
            pass
        assert sent < 300_000, "the worker read every ping while the client read no pong"
        master.wait_for(r"closed a WebSocket from 127\.0\.0\.1:\d+: it read nothing \(\d+ bytes waiting\) for 3 s",
                        timeout=WRITE_TIMEOUT + 10, start=mark)
        dropped = time.monotonic() - started
    grown = worker.check(8 * MiB, "a ping flood")
    print(f"pings sent before the worker stopped reading: {sent:,} ({sent * len(ping) / MiB:.1f} MiB); "
          f"dropped after {dropped:.1f} s; worker grew {grown / MiB:.1f} MiB")
    fresh_clients_are_served(port)
