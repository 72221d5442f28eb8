"""--proxy-headers: which peers are trusted proxies, and the client and scheme they report."""

from __future__ import annotations

import ipaddress
from typing import Any

from prun.runtime.server import BootError


class TrustedProxies:
    """The peers whose X-Forwarded-* headers are believed (--forwarded-allow-ips)."""

    def __init__(self, spec: str) -> None:
        self.everyone = False
        self.hosts: set[str] = set()
        self.networks: list[Any] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item == "*":
                self.everyone = True
            elif "/" in item:
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise BootError(f"--forwarded-allow-ips: {item!r} is not an IP address or network") from None
            else:
                self.hosts.add(item)

    def __contains__(self, host: str) -> bool:
        if self.everyone or host in self.hosts:
            return True
        if self.networks:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(address in net for net in self.networks)
        return False


def forwarded(
    trusted: TrustedProxies, client: Any, scheme: str, fwd_for: bytes | None, fwd_proto: bytes | None
) -> tuple[Any, str]:
    """The client and scheme a trusted proxy reports (X-Forwarded-For / X-Forwarded-Proto)."""
    if fwd_proto is not None:
        proto = fwd_proto.decode("latin-1").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
    if fwd_for is not None:
        hops = [h.strip() for h in fwd_for.decode("latin-1").split(",") if h.strip()]
        # The client is the nearest hop that is not itself a trusted proxy.
        host = None
        for hop in reversed(hops):
            host = hop
            if hop not in trusted:
                break
        if host is not None:
            client = (host, 0)
    return client, scheme
