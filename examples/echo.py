"""A raw TCP echo server: every line a client sends comes back.

    prun echo:handle -b 127.0.0.1:9000 -i 2
    printf 'hello\n' | nc -q1 127.0.0.1 9000
"""

import asyncio


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()
