"""TLS for the benchmarks: a local CA and a P-256 server certificate for 127.0.0.1, made at run time with
the `openssl` command (the key in PKCS#8, which every server here reads: granian reads no other form),
and what a server negotiates with a client (protocol version, cipher)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificate:
    ca: Path  # the CA certificate that signed `cert` (for clients that verify)
    cert: Path  # the server certificate (PEM)
    key: Path  # its private key (PEM, PKCS#8)


def make_certificate(directory: Path) -> Certificate:
    """A CA and a server certificate for 127.0.0.1 (P-256, valid 2 days) in `directory`."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make a certificate: apt-get install openssl")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    directory.mkdir(parents=True, exist_ok=True)
    p256 = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    run(*p256, "-out", "ca.key")
    # A CA with the key usage and a server certificate with the key identifiers that strict verification (the
    # default of ssl.create_default_context from Python 3.13) asks for.
    run("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run(*p256, "-out", "server.key")
    run("req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nsubjectKeyIdentifier=hash\n"
                                       "authorityKeyIdentifier=keyid,issuer\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "1", "-days", "2",
        "-out", "server.pem", "-extfile", "san.ext")
    return Certificate(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def client_context(cert: Certificate) -> ssl.SSLContext:
    """A client context that trusts `cert`'s CA (and checks the name 127.0.0.1)."""
    return ssl.create_default_context(cafile=str(cert.ca))


def negotiated(port: int, cert: Certificate, timeout: float = 5.0) -> dict[str, object]:
    """What the server on `port` agrees on with a default client: protocol version, cipher, ALPN."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        context = client_context(cert)
        context.set_alpn_protocols(["http/1.1"])
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            cipher = conn.cipher()
            return {"version": conn.version(), "cipher": cipher[0] if cipher else None,
                    "alpn": conn.selected_alpn_protocol()}
