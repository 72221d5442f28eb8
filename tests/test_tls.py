"""TLS in real prun masters: https under both balancing policies, client certificates, certificate rotation
by HUP under load, a broken new certificate rolling back, bad files at start, the handshake bound, the
cap on handshakes in progress under a flood of silent connections, and the profiles (--tls-profile,
--tls-groups) as `openssl s_client` probes see them.

Certificates come from a local CA made with the `openssl` command in each test's tmp_path.
"""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import KeepAliveLoad, LoneWorker, wait_until

APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = scope["scheme"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''

WSGI_APP = '''
def app(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [environ["wsgi.url_scheme"].encode()]
'''

OPENSSL = shutil.which("openssl")
if OPENSSL is None:  # pragma: no cover
    raise RuntimeError("the TLS tests make their certificates with the openssl command: install openssl")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([str(OPENSSL), *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A local CA in `directory`, and certificates it signs (EC keys: fast to make)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = directory / "ca.pem"
        self._key("ca.key")
        # With the key usage and key identifiers that strict verification (ssl.create_default_context's
        # default from Python 3.13) asks for, in the CA and in each certificate it signs.
        openssl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=prun test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=directory)

    def _key(self, name: str) -> Path:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name, cwd=self.dir)
        return self.dir / name

    def issue(self, name: str, serial: int, client: bool = False) -> tuple[Path, Path]:
        """(certificate, key) named `name`, with this serial number, for 127.0.0.1 or as a client."""
        key = self._key(f"{name}.key")
        openssl("req", "-new", "-key", key.name, "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=self.dir)
        ext = self.dir / f"{name}.ext"
        ext.write_text(("extendedKeyUsage=clientAuth\n" if client else
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
                       + "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
                str(serial), "-days", "2", "-out", f"{name}.pem", "-extfile", ext.name, cwd=self.dir)
        return self.dir / f"{name}.pem", key

    def client_context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    return Pki(directory)


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is served."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() in ("http/1.1", None)
            return int(tls.getpeercert()["serialNumber"], 16)  # type: ignore[index, arg-type]


def serve(prun, tmp_path: Path, cert: tuple[Path, Path], *extra: str, app: str = APP, **kwargs):  # type: ignore[no-untyped-def]
    (tmp_path / "tlsapp.py").write_text(app)
    return prun("tlsapp:app", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "--certfile", str(cert[0]),
                "--keyfile", str(cert[1]), *extra, **kwargs)


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_https_under_both_balancing_policies(prun, tmp_path: Path, pki: Pki, balance: str) -> None:  # type: ignore[no-untyped-def]
    cert = pki.issue("server", 1001)
    master = serve(prun, tmp_path, cert, "-i", "2", "--balance", balance)
    port = master.wait_ready()
    with httpx.Client(verify=pki.client_context(), timeout=10) as client:
        for _ in range(5):
            response = client.get(f"https://127.0.0.1:{port}/")
            assert response.status_code == 200
            assert response.text == "https"  # scope["scheme"]
    context = pki.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.selected_alpn_protocol() == "h2"  # HTTP/2 preferred (the h2 library is in the test extra)
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port is no request
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


def test_wsgi_url_scheme_is_https(prun, tmp_path: Path, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    master = serve(prun, tmp_path, pki.issue("server", 7), "--interface", "wsgi", app=WSGI_APP)
    port = master.wait_ready()
    assert httpx.get(f"https://127.0.0.1:{port}/", verify=pki.client_context(), timeout=10).text == "https"


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_https_on_a_socket_activation_style_fd_under_container(prun, tmp_path: Path, pki: Pki, balance: str) -> None:  # type: ignore[no-untyped-def]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    master = serve(prun, tmp_path, pki.issue("server", 8), "-b", f"fd://{sock.fileno()}", "--balance", balance,
                   "--container", pass_fds=(sock.fileno(),))
    sock.close()
    master.wait_for("ready:")
    assert httpx.get(f"https://127.0.0.1:{port}/", verify=pki.client_context(), timeout=10).text == "https"


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_client_certificate_required(prun, tmp_path: Path, pki: Pki, balance: str) -> None:  # type: ignore[no-untyped-def]
    client_cert = pki.issue("client", 9, client=True)
    master = serve(prun, tmp_path, pki.issue("server", 10), "--balance", balance, "--ca-certs", str(pki.ca),
                   "--cert-reqs", "required")
    port = master.wait_ready()
    url = f"https://127.0.0.1:{port}/"
    with pytest.raises(httpx.TransportError):  # no client certificate: the handshake is refused
        httpx.get(url, verify=pki.client_context(), timeout=10)
    tmp_path.joinpath("other").mkdir()
    stranger = Pki(tmp_path / "other")  # a certificate from another CA is refused too
    with pytest.raises(httpx.TransportError):
        httpx.get(url, verify=pki.client_context(stranger.issue("client", 11, client=True)), timeout=10)
    response = httpx.get(url, verify=pki.client_context(client_cert), timeout=10)
    assert response.status_code == 200 and response.text == "https"


class HttpsLoad(KeepAliveLoad):
    """Threads sending HTTPS requests, half on keep-alive connections, half each on a new connection (a new
    handshake); a request fails on any error or a non-200."""

    body = b"https"
    wait_seconds = 20.0

    def __init__(self, port: int, context: ssl.SSLContext, clients: int = 4) -> None:
        self.context = context
        super().__init__(port, clients)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.context)

    def path(self, index: int) -> str:
        return "/"

    def fresh(self, index: int) -> bool:
        return index % 2 == 1


def replace_in_place(target: Path, source: Path) -> None:
    """What certbot's renewal looks like to prun: the same path, new contents."""
    tmp = target.with_suffix(".new")
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_hup_rotates_the_certificate_under_load_without_a_failed_request(prun, tmp_path: Path, pki: Pki,  # type: ignore[no-untyped-def]
                                                                          balance: str) -> None:
    live = (tmp_path / "live.pem", tmp_path / "live.key")
    first = pki.issue("first", 2001)
    replace_in_place(live[0], first[0])
    replace_in_place(live[1], first[1])
    master = serve(prun, tmp_path, live, "-i", "2", "--balance", balance, "--graceful-timeout", "10")
    port = master.wait_ready()
    context = pki.client_context()
    assert served_serial(port, context) == 2001
    second = pki.issue("second", 2002)
    with HttpsLoad(port, context, clients=6) as load:
        load.wait_requests(100)
        replace_in_place(live[1], second[1])
        replace_in_place(live[0], second[0])
        master.reload(r"reload complete: 2 workers on gen 2")
        load.wait_requests(100)
        for generation in (3, 4):  # more drains under new handshakes: none in flight may be dropped
            master.reload(rf"reload complete: 2 workers on gen {generation}")
            load.wait_requests(100)
        time.sleep(0.2)  # a moment of load on the new generation before stopping
    assert load.failed == 0, load.errors[:5]
    assert served_serial(port, context) == 2002
    # A broken new certificate: the new worker cannot boot, the reload rolls back, the old one is still served.
    live[0].write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    match = master.reload(r"reload failed: (.*)")
    assert "--certfile" in match.group(1)
    assert served_serial(port, context) == 2002
    assert httpx.get(f"https://127.0.0.1:{port}/", verify=context, timeout=10).text == "https"


def start_failure(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    from tests.support import prun_command

    (tmp_path / "tlsapp.py").write_text(APP)
    done = subprocess.run([*prun_command(), "tlsapp:app", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return done.returncode, (done.stdout + done.stderr).splitlines()


def test_bad_tls_files_at_start_are_one_line_and_exit_2(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.issue("server", 3)
    _, other_key = pki.issue("other", 4)
    code, lines = start_failure(tmp_path, "--certfile", str(tmp_path / "missing.pem"), "--keyfile", str(key))
    assert code == 2 and len(lines) == 1 and "--certfile" in lines[0] and "no such file" in lines[0], lines
    code, lines = start_failure(tmp_path, "--certfile", str(cert), "--keyfile", str(other_key))
    assert code == 2 and len(lines) == 1 and "match" in lines[0], lines
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(key.read_bytes())
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads any file
        code, lines = start_failure(tmp_path, "--certfile", str(cert), "--keyfile", str(unreadable))
        assert code == 2 and len(lines) == 1 and f"--keyfile {unreadable}: permission denied" in lines[0], lines
    code, lines = start_failure(tmp_path, "--certfile", str(cert), "--keyfile", str(key), "--cert-reqs", "required")
    assert code == 2 and len(lines) == 1 and "--ca-certs" in lines[0], lines


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_a_client_that_never_handshakes_is_closed_after_the_bound(prun, tmp_path: Path, pki: Pki,  # type: ignore[no-untyped-def]
                                                                 balance: str) -> None:
    master = serve(prun, tmp_path, pki.issue("server", 5), "--balance", balance, "--timeout-request-header", "1")
    port = master.wait_ready()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as idle:
        started = time.monotonic()
        try:
            assert idle.recv(1) == b""  # closed by the server, no byte sent
        except ConnectionResetError:
            pass  # an abort is a close too
        waited = time.monotonic() - started
    assert 0.5 < waited < 10, waited
    assert httpx.get(f"https://127.0.0.1:{port}/", verify=pki.client_context(), timeout=10).text == "https"


def test_what_the_tls_files_are_checked_for(tmp_path: Path, pki: Pki) -> None:
    from prun.runtime.options import WorkerOptions
    from prun.runtime.tls import TlsError, server_context

    cert, key = pki.issue("server", 12)
    openssl("ec", "-in", key.name, "-aes256", "-passout", "pass:open sesame", "-out", "locked.key", cwd=pki.dir)
    locked = pki.dir / "locked.key"

    def error(**options: str) -> str:
        with pytest.raises(TlsError) as caught:
            server_context(WorkerOptions(**options))  # type: ignore[arg-type]
        return str(caught.value)

    assert server_context(WorkerOptions()) is None  # no --certfile: plain TCP
    context = server_context(WorkerOptions(certfile=str(cert), keyfile=str(locked), keyfile_password="open sesame",
                                           ca_certs=str(pki.ca), cert_reqs="optional", ciphers="ECDHE+AESGCM"))
    assert context is not None and context.verify_mode == ssl.CERT_OPTIONAL
    assert "--keyfile-password" in error(certfile=str(cert), keyfile=str(locked), keyfile_password="wrong")
    assert error(keyfile=str(key)) == "--keyfile and --ca-certs need --certfile"
    assert error(certfile=str(pki.dir)) == f"--certfile {pki.dir}: it is a directory"
    assert "no cipher matches" in error(certfile=str(cert), keyfile=str(key), ciphers="NO-SUCH-CIPHER")
    assert error(certfile=str(cert), keyfile=str(key), ca_certs=str(tmp_path / "nope.pem"), cert_reqs="required") \
        == f"--ca-certs {tmp_path / 'nope.pem'}: no such file"
    assert error(certfile=str(cert), keyfile=str(key), ca_certs=str(key)).startswith(f"cannot load --ca-certs {key}")
    assert "expected one of none, optional, required" in error(certfile=str(cert), cert_reqs="sometimes")
    assert "not a group OpenSSL knows" in error(certfile=str(cert), keyfile=str(key), tls_groups="P-255")
    assert "expected modern or intermediate" in error(certfile=str(cert), keyfile=str(key), tls_profile="old")
    if not GROUP_LISTS:
        assert "this Python sets one group" in error(certfile=str(cert), keyfile=str(key), tls_groups="X25519:X448")
    if X25519:
        context = server_context(WorkerOptions(certfile=str(cert), keyfile=str(key), tls_profile="modern"))
        assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE  # Mozilla's profiles: the client's order
    else:
        assert error(certfile=str(cert), keyfile=str(key), tls_groups="X25519") == (
            "--tls-groups 'X25519': Python 3.10 offers one elliptic curve (e.g. prime256v1 or secp384r1), not "
            "X25519, which needs Python 3.11 or later")
        assert error(certfile=str(cert), keyfile=str(key), tls_profile="modern").startswith("--tls-profile modern: ")


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_a_stream_handler_is_served_over_tls_too(prun, pki: Pki, balance: str) -> None:  # type: ignore[no-untyped-def]
    cert, key = pki.issue("server", 13)
    master = prun("tcp:handle", "-b", "127.0.0.1:0", "--balance", balance, "--certfile", str(cert), "--keyfile",
                  str(key))
    port = master.wait_ready()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"ping\n")
            assert tls.recv(100) == b"ping\n"


GROUP_LISTS = hasattr(ssl.SSLContext, "set_groups")  # Python 3.15+: a list of groups, else one
X25519 = sys.version_info >= (3, 11)  # Python 3.10's set_ecdh_curve sets elliptic curves only


def probe(port: int, *args: str) -> bool:
    """Whether `openssl s_client` with these options completes a handshake with the server on `port`."""
    done = subprocess.run([str(OPENSSL), "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return done.returncode == 0


def test_the_modern_profile_is_tls_1_3_only_with_mozillas_groups(prun, tmp_path: Path, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    master = serve(prun, tmp_path, pki.issue("server", 21), "--tls-profile", "modern")
    if not X25519:  # its one group cannot be set: refused at start, in one line
        assert master.wait_exit(15) == 2
        assert "prun: error: --tls-profile modern: Python 3.10 offers one elliptic curve" in master.output
        return
    port = master.wait_ready()
    assert probe(port, "-tls1_3")
    assert not probe(port, "-tls1_2")
    assert probe(port, "-tls1_3", "-groups", "X25519")
    assert not probe(port, "-tls1_3", "-groups", "X448")  # OpenSSL offers it by default; Mozilla's list does not
    assert not probe(port, "-tls1_3", "-groups", "secp521r1")
    assert probe(port, "-tls1_3", "-groups", "P-256") == GROUP_LISTS  # (a Python that sets one group: X25519)
    assert httpx.get(f"https://127.0.0.1:{port}/", verify=pki.client_context(), timeout=10).text == "https"


def test_the_intermediate_profile_has_mozillas_ciphers_and_groups(prun, tmp_path: Path, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    master = serve(prun, tmp_path, pki.issue("server", 22), "--tls-profile", "intermediate")
    port = master.wait_ready()
    assert probe(port, "-tls1_3")
    assert probe(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert probe(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")
    # CBC suites: in Python's default list, not in Mozilla's
    assert not probe(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256")
    assert not probe(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384")
    assert probe(port, "-tls1_2", "-groups", "P-256")
    assert not probe(port, "-tls1_2", "-groups", "X448")
    assert not probe(port, "-tls1_3", "-groups", "secp521r1")
    assert probe(port, "-tls1_3", "-groups", "X25519") == GROUP_LISTS  # (one group: prime256v1, for old clients)


def test_tls_groups_names_the_key_exchange_groups_offered(prun, tmp_path: Path, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    master = serve(prun, tmp_path, pki.issue("server", 23), "--tls-groups", "secp384r1")
    port = master.wait_ready()
    assert probe(port, "-groups", "P-384")
    assert not probe(port, "-groups", "X25519")
    assert not probe(port, "-groups", "P-256")


@pytest.fixture
def many_fds() -> Iterator[None]:
    """This process may hold a few thousand sockets meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


SILENT = 2000
CAP = 256  # --limit-tls-handshakes' default


def test_a_flood_of_silent_connections_holds_no_more_than_the_handshake_cap(  # type: ignore[no-untyped-def]
        prun, tmp_path: Path, pki: Pki, many_fds: None) -> None:
    """The issue's case: 2,000 connections to a TLS port that never send a byte held 104 MiB of the worker
    (about 53 KiB each) until the head timeout. At most 256 handshakes are in progress: beyond, new
    connections wait in the kernel's queue and cut the oldest handshake once it has run 0.25 s, so the
    silent ones are closed long before the (here 60 s) timeout and a real client still gets through."""
    master = serve(prun, tmp_path, pki.issue("server", 24), "-i", "1", "--timeout-request-header", "60")
    port = master.wait_ready()
    context = pki.client_context()
    url = f"https://127.0.0.1:{port}/"
    assert httpx.get(url, verify=context, timeout=10).text == "https"
    worker = LoneWorker(master)
    silent: list[socket.socket] = []
    try:
        for _ in range(SILENT):
            silent.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            silent[-1].setblocking(False)
        assert httpx.get(url, verify=context, timeout=20).text == "https"  # served during the flood

        def cut() -> int:
            """How many of the silent connections the worker has closed."""
            closed = 0
            for sock in silent:
                try:
                    closed += sock.recv(1, socket.MSG_PEEK) == b""
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed += 1
            return closed

        wait_until(lambda: cut() >= SILENT - CAP, timeout=30, interval=0.2,
                   what=f"the worker to cut all but {CAP} silent connections")
        held = worker.proc.num_fds() - worker.fds
        grown = worker.grown()
        assert held <= CAP, f"the worker holds {held} connections in their handshake"
    finally:
        for sock in silent:
            sock.close()
    worker.check(CAP * 100 * 1024, "a flood of silent TLS connections")
    print(f"worker grew {grown / 2**20:.1f} MiB with {SILENT} silent connections; held {held} at the end")
    assert httpx.get(url, verify=context, timeout=10).text == "https"


def test_handed_over_connections_past_the_cap_cut_the_oldest_handshake(pki: Pki) -> None:
    """leastconn: a connection the master hands over cannot wait in the kernel's queue; at the cap it cuts
    the oldest handshake in progress, whatever its age (in-process server, cap 2)."""
    from tests.test_http_support import ok, serving

    cert, key = pki.issue("server", 25)
    with serving(ok(b"handed over"), certfile=str(cert), keyfile=str(key), limit_tls_handshakes=2) as srv, \
            socket.socket() as front:
        front.bind(("127.0.0.1", 0))
        front.listen(8)
        clients = []
        try:
            for _ in range(5):  # silent clients, handed over one by one
                clients.append(socket.create_connection(front.getsockname(), timeout=10))
                srv.call(srv.server.accept, front.accept()[0])
            for client in clients[:3]:  # cut for the two after each
                assert client.recv(1) == b""
            with socket.create_connection(front.getsockname(), timeout=10) as raw:
                srv.call(srv.server.accept, front.accept()[0])
                with pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    assert tls.recv(65536).startswith(b"HTTP/1.1 200 OK")
            assert clients[3].recv(1) == b""  # the oldest of the two left, cut for that one
        finally:
            for client in clients:
                client.close()
