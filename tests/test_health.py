"""Where the health endpoint listens: --health PORT on loopback, --health HOST:PORT where it is told (kubelet)."""

from __future__ import annotations

import http.client
import re
import socket

import psutil
import pytest


def get(host: str, port: int, path: str = "/readyz") -> int:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def health_addresses(pid: int) -> set[str]:
    """HOST:PORT of each socket the master listens on (its --bind and its health endpoint)."""
    return {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN}


def outside_address() -> str | None:
    """An IPv4 address of this machine other than loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


def health_port(master, host: str) -> int:  # type: ignore[no-untyped-def]
    """The port of the master's health endpoint, once its first generation is ready; it said it listens on `host`."""
    host = f"[{host}]" if ":" in host else host
    port = int(master.wait_for(rf"health endpoint on http://{re.escape(host)}:(\d+)/readyz").group(1))
    master.wait_ready()
    return port


@pytest.mark.parametrize(("spec", "host"), [("0.0.0.0:0", "0.0.0.0"), ("0", "127.0.0.1")])
def test_health_listens_on_the_host_given_or_on_loopback(prun, spec: str, host: str) -> None:
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--health", spec)
    port = health_port(master, host)
    assert f"{host}:{port}" in health_addresses(master.pid)
    assert get("127.0.0.1", port) == 200
    outside = outside_address()
    if outside is not None and host == "0.0.0.0":
        assert get(outside, port) == 200
    elif outside is not None:
        with pytest.raises(ConnectionRefusedError):
            get(outside, port)


def test_health_address_from_the_environment_and_in_ipv6(prun) -> None:
    master = prun("tcp:handle", "-b", "127.0.0.1:0", env={"PRUN_HEALTH": "127.0.0.1:0"})
    assert get("127.0.0.1", health_port(master, "127.0.0.1")) == 200
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return  # no IPv6 loopback here; the IPv4 forms above are what kubelet uses
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--health", "[::1]:0")
    assert get("::1", health_port(master, "::1")) == 200


@pytest.mark.parametrize(("spec", "message"), [
    ("0.0.0.0:http", "invalid --health '0.0.0.0:http': expected PORT or HOST:PORT"),
    ("300.1.1.1:0", "cannot serve --health on 300.1.1.1:0"),
])
def test_a_health_address_that_cannot_be_served_is_one_line_and_exit_2(prun, spec: str, message: str) -> None:
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--health", spec)
    assert master.wait_exit(15) == 2
    assert [line for line in master.output.splitlines() if line.startswith("prun: error:")] == [
        line for line in master.output.splitlines() if line.startswith(f"prun: error: {message}")]
    assert message in master.output
