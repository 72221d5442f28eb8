"""A worker whose stdout and stderr became a broken pipe (the daemon's log writer was killed) still serves:
the app's prints are dropped, not raised into it, and a generation that prints at import still boots."""

from __future__ import annotations

import http.client
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support import APPS, prun_command, wait_until


class Master:
    """A foreground master whose output the test reads from one pipe (its stdout and stderr, or the FIFO
    given as its --log-file: `output`, the test's read end), then closes."""

    def __init__(self, *args: str, output: int = -1) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "WEB_CONCURRENCY")}
        self.proc = subprocess.Popen(prun_command() + list(args), cwd=APPS, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.output = output if output >= 0 else self.proc.stdout.fileno()
        self.seen: set[int] = set()
        self.buffered = b""

    def wait_for(self, pattern: bytes, timeout: float = 20.0) -> re.Match[bytes]:
        """The first match of `pattern` in what the master printed, read until it appears."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.output, selectors.EVENT_READ)
            while not (found := regex.search(self.buffered)):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"no {pattern!r} within {timeout}s in:\n{self.buffered.decode()}")
                chunk = os.read(self.output, 65536)
                if not chunk:
                    raise AssertionError(f"the master closed its output before {pattern!r}:\n{self.buffered.decode()}")
                self.buffered += chunk
        return found

    def workers(self) -> set[int]:
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return set()
        found = set()
        for child in children:
            try:
                if child.cmdline()[:2] == ["prun", "worker"] or " ".join(child.cmdline()).startswith("prun worker"):
                    found.add(child.pid)
            except psutil.Error:
                continue
        self.seen |= found
        return found

    def close_output(self) -> None:
        """Close the test's read end: the master's and its workers' writes are EPIPE from now on."""
        assert self.proc.stdout is not None
        if self.output != self.proc.stdout.fileno():
            os.close(self.output)
        self.proc.stdout.close()
        self.output = -1

    def cleanup(self) -> None:
        self.workers()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pid in self.seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.output >= 0:
            self.close_output()


@pytest.fixture
def master() -> Iterator[type[Master]]:
    started: list[Master] = []

    def start(*args: str, output: int = -1) -> Master:
        instance = Master(*args, output=output)
        started.append(instance)
        return instance

    yield start  # type: ignore[misc]
    for instance in started:
        instance.cleanup()


def say(port: int, what: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/say?{what}")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_an_app_that_prints_answers_200_after_its_log_pipe_broke_and_a_new_generation_boots(master):
    prun = master("greeter:app", "-i", "2", "-b", "127.0.0.1:0")
    port = int(prun.wait_for(rb"listening on \S+:(\d+)").group(1))
    prun.wait_for(rb"ready: 2 workers")
    assert say(port, "before")[0] == 200
    prun.wait_for(rb"said before")
    first = prun.workers()
    prun.close_output()  # as when the log writer is SIGKILLed: every write to the pipe is EPIPE now

    for n in range(20):  # each one prints; both workers take some
        assert say(port, f"after-{n}")[0] == 200

    prun.proc.send_signal(signal.SIGHUP)  # the new workers print at import, into the broken pipe too
    wait_until(lambda: len(prun.workers()) == 2 and not prun.workers() & first, timeout=30,
               what="a new generation of 2 workers")
    status, body = say(port, "new")
    assert status == 200 and int(body.split()[1]) in prun.workers()
    assert prun.proc.poll() is None


def test_prints_reach_a_new_log_file_again_and_it_says_how_many_were_dropped(master, tmp_path):
    fifo = tmp_path / "log"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # (RDWR: a FIFO that never reads as EOF)
    prun = master("greeter:app", "-b", "127.0.0.1:0", "--log-file", str(fifo), output=reader)
    port = int(prun.wait_for(rb"listening on \S+:(\d+)").group(1))
    prun.wait_for(rb"ready: 1 worker")
    prun.close_output()
    for n in range(3):
        assert say(port, f"lost-{n}")[0] == 200
    fifo.rename(tmp_path / "old-log")
    prun.proc.send_signal(signal.SIGUSR1)  # the master reopens --log-file (a new file now) and sends it over
    log = tmp_path / "log"
    wait_until(lambda: log.exists() and b"reopened log file" in log.read_bytes(), what="the reopened log file")
    wait_until(lambda: say(port, "found")[0] == 200 and b"said found" in log.read_bytes(),
               what="the request's line in the new file")
    text = log.read_text()
    # the master relays its worker's lines to --log-file: each line is either in the new file (relayed after the
    # reopen) or counted among those the broken pipe took, never silently lost
    dropped = re.search(r"prun: warning: (\d+) log lines were dropped \(Broken pipe\)", text)
    assert dropped and int(dropped.group(1)) + text.count("said lost-") == 3, text
