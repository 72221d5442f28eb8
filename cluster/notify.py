"""sd_notify: tells systemd (Type=notify / notify-reload) when prun is ready, reloading or stopping."""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; does nothing when it is not set."""

    def __init__(self, address: str | None) -> None:
        self.address = address or ""
        if self.address.startswith("@"):
            self.address = "\0" + self.address[1:]  # abstract namespace
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @classmethod
    def from_environ(cls) -> Notifier:
        return cls(os.environ.pop("NOTIFY_SOCKET", None))  # the workers must not notify on their own

    def send(self, *lines: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            pass  # systemd went away; nothing to tell

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self, status: str) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
