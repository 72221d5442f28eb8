"""New TLS connections per second (one handshake, one request, close each), prun beside uvicorn.

    python -m benchmarks.tls_handshakes [--seconds 10] [--clients 16] [--servers prun,prun-shared,uvicorn]

One worker each, a P-256 certificate from a local CA made with the `openssl` command (harness/tls.py), the app of
benchmarks/apps/tiny.py. The client is Python threads in this process, the same for every server: the
numbers compare servers on one machine, they are not the servers' ceilings. Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness.tls import make_certificate

APPS = Path(__file__).parent / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(server: str, port: int, cert: Path, key: Path) -> list[str]:
    bindir = os.path.dirname(sys.executable)
    if server.startswith("prun"):
        balance = "shared" if server == "prun-shared" else "leastconn"
        return [os.path.join(bindir, "prun"), "tiny:app", "-i", "1", "-b", f"127.0.0.1:{port}", "--balance", balance,
                "--chdir", str(APPS), "--certfile", str(cert), "--keyfile", str(key)]
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "tiny:app", "--app-dir", str(APPS), "--port", str(port),
                "--workers", "1", "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http",
                "httptools", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    raise SystemExit(f"unknown server {server!r} (choose from prun, prun-shared, uvicorn)")


def one_connection(port: int, context: ssl.SSLContext) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise ValueError(data[:40])


def wait_serving(port: int, context: ssl.SSLContext, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            one_connection(port, context)
            return
        except (OSError, ValueError):
            time.sleep(0.1)
    raise SystemExit("the server did not serve within 30 s")


def measure(server: str, seconds: float, clients: int, ca: Path, cert: Path, key: Path) -> tuple[float, int]:
    """(connections per second, errors)."""
    port = free_port()
    context = ssl.create_default_context(cafile=str(ca))
    proc = subprocess.Popen(command(server, port, cert, key), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_serving(port, context, proc)
        done = [0] * clients
        errors = [0] * clients
        stop = time.monotonic() + seconds

        def client(index: int) -> None:
            while time.monotonic() < stop:
                try:
                    one_connection(port, context)
                    done[index] += 1
                except (OSError, ValueError):
                    errors[index] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(done) / (time.monotonic() - started), sum(errors)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--servers", default="prun,prun-shared,uvicorn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certificate = make_certificate(Path(tmp))
        ca, cert, key = certificate.ca, certificate.cert, certificate.key
        print(f"load average before: {os.getloadavg()[0]:.2f}; {args.clients} clients, {args.seconds:g} s each")
        print("| server | new TLS connections/s | errors |\n|---|---|---|")
        for server in args.servers.split(","):
            rate, errors = measure(server, args.seconds, args.clients, ca, cert, key)
            print(f"| {server} | {rate:.0f} | {errors} |", flush=True)


if __name__ == "__main__":
    main()
