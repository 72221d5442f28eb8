"""Writes numbered lines in every way an app may write them, each line checkable on its own (a CRC).

    scribe:app                 an ASGI app whose workers write from a thread at import (cluster mode)
    python scribe.py           the same writing as a fork-mode command; it then exits (see SCRIBE_ONCE)

Each line is `scribe <pid> <n> <payload> <crc32 of what precedes, 8 hex digits>` (bytes, not always UTF-8).
SCRIBE_LINES lines per process (default 1000), SCRIBE_WAYS a comma-separated choice among:

    print     print() into an unbuffered text stream with write_through (the text, then the newline: two writes)
    pieces    os.write of the line in two to four pieces
    big       lines of 5 to 20 KiB in one write (over PIPE_BUF)
    junk      a payload with bytes that are not UTF-8, NUL, CR, tabs
    huge      lines of 100 KiB to 1 MiB (cut into pieces by --log-max-line)

taken in turn, line after line. SCRIBE_STREAM=stderr writes on fd 2. The last line is
`scribe <pid> done <count>` with no newline when SCRIBE_NO_NEWLINE is set (a process that exits mid-line).
SCRIBE_PACE=SECONDS: a pause after every 100 lines (a writing that lasts); SCRIBE_HOLD=PATH: before the last
line, wait until PATH exists (the test says when). SCRIBE_ONCE=DIR: write only in the first run of each fork-mode instance (then sleep), so a restart by the
supervisor adds no lines.
"""

import io
import os
import random
import threading
import time
import zlib

LINES = int(os.environ.get("SCRIBE_LINES", "1000"))
WAYS = os.environ.get("SCRIBE_WAYS", "print,pieces,big,junk").split(",")
FD = 2 if os.environ.get("SCRIBE_STREAM") == "stderr" else 1


def line(pid: int, n: int, way: str, rng: random.Random) -> bytes:
    if way == "big":
        payload = b"b" * rng.randint(5 << 10, 20 << 10)
    elif way == "huge":
        payload = b"h" * rng.randint(100 << 10, 1 << 20)
    elif way == "junk":
        payload = b"j\x00\xff\xfe\r\t\x80" + bytes(rng.randrange(1, 256) for _ in range(40)).replace(b"\n", b"")
    else:
        payload = way.encode() * rng.randint(1, 40)
    head = b"scribe %d %d %s" % (pid, n, payload)
    return head + b" %08x\n" % zlib.crc32(head)


def write_all() -> None:
    pid = os.getpid()
    rng = random.Random(pid)
    text = io.TextIOWrapper(open(FD, "wb", buffering=0, closefd=False), encoding="latin-1", write_through=True)
    pace = float(os.environ.get("SCRIBE_PACE", "0"))
    for n in range(LINES):
        if pace and n % 100 == 99:
            time.sleep(pace)
        way = WAYS[n % len(WAYS)]
        data = line(pid, n, way, rng)
        if way == "print":
            print(data[:-1].decode("latin-1"), file=text)  # the text, then the newline: two write(2)s
        elif way == "pieces":
            cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1)))
            for start, end in zip([0, *cuts], [*cuts, len(data)]):
                os.write(FD, data[start:end])
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(FD, view):]
    hold = os.environ.get("SCRIBE_HOLD")
    while hold and not os.path.exists(hold):
        time.sleep(0.02)
    last = b"scribe %d done %d" % (pid, LINES)
    os.write(FD, last if os.environ.get("SCRIBE_NO_NEWLINE") else last + b"\n")


def first_run() -> bool:
    once = os.environ.get("SCRIBE_ONCE")
    if not once:
        return True
    mark = os.path.join(once, f"instance-{os.environ.get('PRUN_INSTANCE', '0')}")
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


if __name__ == "__main__":
    if first_run():
        write_all()
    else:
        while True:
            time.sleep(60)
else:
    threading.Thread(target=write_all, daemon=True).start()


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"scribe %d" % os.getpid()})
