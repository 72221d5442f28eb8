"""A line app that starts children, for prun's tests of what outlives a worker.

Each command answers "CHILD_PID WORKER_PID".

    fork        os.fork() a child that sleeps a minute
    spawn       subprocess.Popen a sleeping interpreter
    stubborn    the same, one that ignores SIGTERM
    helper      a sleeping interpreter started in the background by a shell that exits at once
    daemon      os.fork() a child that leaves the session (setsid) and sleeps a minute
"""

import asyncio
import os
import subprocess
import sys
import time

children: list[subprocess.Popen[bytes]] = []
SLEEPER = "import signal, time; {}time.sleep(60)"


def spawn(ignore_term: bool) -> int:
    code = SLEEPER.format("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else "")
    children.append(subprocess.Popen([sys.executable, "-c", code]))
    return children[-1].pid


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        command = line.decode().strip()
        if command == "fork":
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
        elif command == "daemon":
            pid = os.fork()
            if pid == 0:
                os.setsid()
                time.sleep(60)
                os._exit(0)
        elif command == "helper":
            shell = f"'{sys.executable}' -c 'import time; time.sleep(60)' >/dev/null 2>&1 & echo $!"
            pid = int(subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout)
        else:
            pid = spawn(ignore_term=command == "stubborn")
        writer.write(f"{pid} {os.getpid()}\n".encode())
        await writer.drain()
    writer.close()
