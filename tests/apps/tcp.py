"""Raw TCP apps for prun's tests. Each reads one command line per request.

    sleep SECONDS   answer 'slept' after SECONDS without blocking the loop
    block SECONDS   block the worker's loop for SECONDS (a hung worker)
    pid             answer the worker's pid
    say TEXT        print TEXT on the worker's stdout, answer 'said'
    grow MB         keep MB more megabytes of memory for good (a leak), answer 'grown'
    anything else   echoed back

`busy` is the same echo spending BUSY_SECONDS of the worker's time on every line first.
"""

import asyncio
import os
import time

leaked: list[bytes] = []


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        command, _, arg = line.decode().strip().partition(" ")
        if command == "sleep":
            await asyncio.sleep(float(arg))
            writer.write(b"slept\n")
        elif command == "block":
            time.sleep(float(arg))
            writer.write(b"blocked\n")
        elif command == "say":
            print(arg, flush=True)
            writer.write(b"said\n")
        elif command == "grow":
            leaked.append(b"x" * (int(arg) * 1024 * 1024))
            writer.write(b"grown\n")
        elif command == "pid":
            writer.write(f"{os.getpid()}\n".encode())
        else:
            writer.write(line)
        await writer.drain()
    writer.close()


BUSY_SECONDS = 0.0004


async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        until = time.perf_counter() + BUSY_SECONDS
        while time.perf_counter() < until:
            pass
        writer.write(line)
        await writer.drain()
    writer.close()


class EchoProtocol(asyncio.Protocol):
    """The same echo as an asyncio.Protocol, for --interface protocol."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]
