"""The health endpoint for probes: /livez, /readyz and /status, served by the master itself.

    GET /livez    200 while the master runs
    GET /readyz   200 when every slot has a READY worker; 503 from the moment a shutdown drain begins
    GET /status   JSON: the app, its generation, and each worker's slot, pid, state and stats
    GET /metrics  Prometheus text format (cluster/metrics.py; needs the prun-cluster[metrics] extra, 501 without)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from prun.cluster.errors import UsageError
from prun.runtime import install_hint

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 501: "Not Implemented",
            503: "Service Unavailable"}


def parse_address(spec: str) -> tuple[str, int]:
    """PORT (loopback), HOST:PORT or [V6]:PORT."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", spec
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"invalid --health {spec!r}: expected PORT or HOST:PORT")
    return host, int(port)


class HealthServer:
    """A tiny HTTP/1.0 server on its own port; one request per connection."""

    def __init__(self, spec: str, ready: Callable[[], bool], status: Callable[[], dict[str, Any]],
                 metrics: Callable[[], bytes] | None = None) -> None:
        self.host, self.port = parse_address(spec)
        self.ready = ready
        self.status = status
        self.metrics = metrics
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        try:
            self.server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise UsageError(f"cannot serve --health on {self.host}:{self.port}: {exc.strerror or exc}") from None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def respond(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", "text/plain"
        path = path.split("?", 1)[0]
        if path == "/livez":
            return 200, b"ok\n", "text/plain"
        if path == "/readyz":
            return (200, b"ready\n", "text/plain") if self.ready() else (503, b"not ready\n", "text/plain")
        if path == "/status":
            return 200, json.dumps(self.status(), indent=1).encode() + b"\n", "application/json"
        if path == "/metrics" and self.metrics is not None:
            from prun.cluster import metrics

            if not metrics.available():
                return 501, f"/metrics needs prometheus_client: {install_hint('metrics')}\n".encode(), "text/plain"
            return 200, self.metrics(), metrics.CONTENT_TYPE
        return 404, b"not found\n", "text/plain"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, body, ctype = self.respond(method, path)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                ConnectionError):
            pass
        finally:
            writer.close()
