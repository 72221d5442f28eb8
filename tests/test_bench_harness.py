"""The benchmark harness's own arithmetic: wrk's report parsed, spreads, ratios, the noise note, rounds
interleaved, the busy-machine gate (benchmarks/harness); the servers' TLS and WebSocket options, the
certificate it makes, and the WebSocket echo client against a real server."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.harness import machine, rounds, servers, stats, wrk, wsload
from benchmarks.harness.results import Context, fmt_ratio, fmt_spread, gate
from benchmarks.harness.tls import Certificate, make_certificate, negotiated

WRK_OUT = """Running 5s test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   640.12us  101.23us   4.10ms   90.12%
    Req/Sec    99.91k     2.11k  103.00k    80.00%
  Latency Distribution
     50%  612.00us
     75%  650.00us
     90%  700.00us
     99%    1.20ms
  497120 requests in 5.00s, 60.21MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  99411.52
Transfer/sec:     12.04MB
"""


def test_wrk_report_parsed() -> None:
    r = wrk.parse(WRK_OUT)
    assert r["requests_per_s"] == 99411.52
    assert r["requests"] == 497120
    assert r["p50_ms"] == 0.612
    assert r["p99_ms"] == 1.2
    assert r["socket_errors"] == {"connect": 0, "read": 3, "write": 1, "timeout": 2}
    assert r["non2xx"] == 7


def test_wrk_report_without_result_is_an_error() -> None:
    try:
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")
    except RuntimeError as exc:
        assert "no result" in str(exc)
    else:
        raise AssertionError("no error")


def test_wrk_command_pins_and_closes() -> None:
    cmd = wrk.command(8000, seconds=1.4, threads=1, cpus="1", close=True)
    assert cmd[:3] == ["taskset", "-c", "1"]
    assert "-d1s" in cmd and "Connection: close" in cmd
    assert wrk.command(8000, seconds=0.2)[2] == "-c64" and "-d1s" in wrk.command(8000, seconds=0.2)
    assert wrk.command(8000, seconds=1)[-1] == "http://127.0.0.1:8000/"
    assert wrk.command(8000, seconds=1, tls=True)[-1] == "https://127.0.0.1:8000/"


def test_spread_and_ratios() -> None:
    s = stats.spread([10.0, 30.0, 20.0])
    assert (s["min"], s["median"], s["max"], s["n"], s["range_pct"]) == (10.0, 20.0, 30.0, 3, 100.0)
    assert stats.spread([])["median"] is None
    r = stats.ratio_spread([20.0, 40.0, 30.0], [10.0, 20.0, 20.0])
    assert (r["min"], r["median"], r["max"], r["of_medians"]) == (1.5, 2.0, 2.0, 1.5)
    assert fmt_spread(stats.spread([1000.0, 3000.0, 2000.0])) == "2,000 (1,000-3,000)"
    assert fmt_spread(stats.spread([5.0])) == "5 (1 round)"


def test_spread_note() -> None:
    # steady machine, clear difference: no note
    assert stats.spread_note("a", [110, 111, 112], "b", [100, 101, 100]) is None
    # per-round ratios on both sides of 1: within noise
    note = stats.spread_note("a", [105, 95, 104], "b", [100, 100, 100])
    assert note is not None and "within noise" in note
    # ratios on one side but their range wider than the difference: within noise
    note = stats.spread_note("a", [101, 120, 102], "b", [100, 100, 100])
    assert note is not None and "within noise" in note
    # the machine's speed drifted, but every round's ratio held: a caveat, not "within noise"
    note = stats.spread_note("a", [150, 300, 225], "b", [100, 200, 150])
    assert note is not None and "swung" in note and "within noise" not in note
    assert "fewer than 2 rounds" in (stats.spread_note("a", [1.0], "b", [1.0]) or "")


def test_rounds_are_interleaved() -> None:
    assert list(rounds.interleave("ABC", 2)) == [(1, "A"), (1, "B"), (1, "C"), (2, "A"), (2, "B"), (2, "C")]
    seen: list[tuple[str, int]] = []
    figures = rounds.measure(["A", "B"], 2, lambda n, i: seen.append((n, i)) or (None if n == "B" and i == 1 else i))
    assert seen == [("A", 1), ("B", 1), ("A", 2), ("B", 2)]
    assert figures == {"A": [1, 2], "B": [2]}


def test_busy_machine_gate() -> None:
    assert machine.busy_reason([0.4, 1.0, 2.0]) is None
    assert machine.busy_reason([3.2, 1.0, 1.0]) == "load average 3.20 > 1.5"
    ctx = Context(load_at_start=[3.2, 1.0, 1.0])
    refused = gate(ctx)
    assert refused is not None and "--allow-busy" in refused
    quick = Context(quick=True, load_at_start=[3.2, 1.0, 1.0])
    assert gate(quick) is None and quick.out_dir.name == "smoke" and quick.label and "smoke" in quick.label
    busy = Context(allow_busy=True, load_at_start=[3.2, 1.0, 1.0])
    assert gate(busy) is None and busy.out_dir.name == "busy" and busy.label and "busy" in busy.label
    quiet = Context(load_at_start=[0.3, 0.2, 0.2])
    assert gate(quiet) is None and quiet.label is None and quiet.out_dir.name == "results"


def test_cpu_model() -> None:
    info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\ncpu MHz\t\t: 2450.000\ncpu MHz\t\t: 2550.000\n"
    assert machine.cpu_model(info) == "AMD EPYC 7B13"
    assert machine.cpu_mhz(info) == 2500


def test_app_without_its_framework_is_skipped() -> None:
    from benchmarks.harness.servers import App

    assert App("x:app", needs="prun_no_such_framework").missing() == (
        "prun_no_such_framework is not installed (pip install -e '.[bench]')")
    assert App("x:app", needs="json").missing() is None and App("x:app").missing() is None


def test_ratios_pair_the_same_rounds() -> None:
    a = [{"round": 1, "x": 20.0}, {"round": 2, "x": 40.0}, {"round": 3, "x": 30.0}]
    b = [{"round": 1, "x": 10.0}, {"round": 3, "x": 20.0}]  # b's round 2 failed
    assert stats.aligned(a, b, "x") == ([20.0, 30.0], [10.0, 20.0])
    assert stats.aligned(a, [], "x") == ([], [])


def test_compare_servers_of_the_same_rounds() -> None:
    runs = {
        "prun": [{"round": 1, "rps": 200.0, "cpu": 5.0}, {"round": 2, "rps": 220.0, "cpu": 5.0}],
        "peer": [{"round": 1, "rps": 100.0, "cpu": 10.0}, {"round": 2, "rps": 100.0, "cpu": 12.5}],
        "close": [{"round": 1, "rps": 190.0, "cpu": 5.0}, {"round": 2, "rps": 230.0, "cpu": 5.0}],
    }
    c = stats.compare(runs, "rps", "prun", "cpu")
    assert c["spread"]["peer"]["median"] == 100.0 and c["cpu_spread"]["prun"]["median"] == 5.0
    assert (c["ratios"]["peer"]["min"], c["ratios"]["peer"]["max"]) == (2.0, 2.2)
    # the peer's CPU per operation over prun's: prun spends half, then 0.4x
    assert (c["cpu_ratios"]["peer"]["min"], c["cpu_ratios"]["peer"]["max"]) == (2.0, 2.5)
    assert "prun" not in c["ratios"]
    assert len(c["notes"]) == 1 and "prun / close" in c["notes"][0] and "within noise" in c["notes"][0]
    assert stats.compare(runs, "rps", None)["ratios"] == {} and "cpu_ratios" not in stats.compare(runs, "rps", None)
    assert fmt_ratio(c["ratios"]["peer"]) == "2.10x (2.00-2.20)"
    assert fmt_ratio(stats.ratio_spread([3.0], [2.0])) == "1.50x (1 round)" and fmt_ratio(None) is None


def test_client_limit_note() -> None:
    assert stats.client_limit_note("prun", [40.0, 55.0, 60.0]) is None
    note = stats.client_limit_note("prun", [97.0, 99.0, 95.0], 100.0, "wrk")
    assert note is not None and "wrk's ceiling, not prun's" in note and "97%" in note
    assert stats.client_limit_note("prun", [150.0], 200.0) is None  # two CPUs, three quarters used
    assert stats.client_limit_note("prun", []) is None


def test_ws_client_report_parsed() -> None:
    out = json.dumps({"messages": 1000, "total": 1064, "seconds": 2.0, "messages_per_s": 500.0,
                      "client_cpu_user_s": 0.1, "client_cpu_system_s": 0.3})
    r = wsload.parse("\n" + out + "\n")
    assert r["messages"] == 1000 and r["client_cpu_pct"] == 20.0
    with pytest.raises(RuntimeError, match="close code 1011"):
        wsload.parse("", "ws_client: connection 3: the server closed the WebSocket (close code 1011)\n", 1)
    with pytest.raises(RuntimeError, match="no report"):
        wsload.parse("garbage", "", 0)
    assert wsload.command(Path("/x/ws_client"), 80, seconds=1.5, connections=8, size=11, cpus="1") == [
        "taskset", "-c", "1", "/x/ws_client", "80", "8", "11", "1.5"]


def test_servers_tls_and_websocket_options() -> None:
    cert = Certificate(Path("/c/ca.pem"), Path("/c/server.pem"), Path("/c/server.key"))
    prun = servers.make("prun", 1, port=8000, tls=cert, ws="auto")
    cmd = prun.command()
    assert cmd[cmd.index("--certfile") + 1] == "/c/server.pem" and cmd[cmd.index("--keyfile") + 1] == "/c/server.key"
    assert cmd[cmd.index("--ws") + 1] == "auto" and prun.label.endswith("--ws auto")
    assert "--certfile" not in servers.make("prun", 1, port=8000).command()
    uvicorn = servers.make("uvicorn-wsproto", 1, port=8000, ws="auto")  # the name picks the implementation
    cmd = uvicorn.command()
    assert cmd[cmd.index("--ws") + 1] == "wsproto" and uvicorn.label.endswith("--ws wsproto")
    assert uvicorn.name == "uvicorn-wsproto"
    cmd = servers.make("uvicorn", 1, port=8000, tls=cert).command()
    assert cmd[cmd.index("--ssl-certfile") + 1] == "/c/server.pem" and "--ws" not in cmd
    cmd = servers.make("granian", 1, port=8000, tls=cert, ws="auto").command()
    assert cmd[cmd.index("--ssl-certificate") + 1] == "/c/server.pem" and "--ws" in cmd
    assert cmd[-1] == "tiny:app"  # granian takes the app last
    cmd = servers.make("gunicorn", 1, port=8000, tls=cert).command()
    assert cmd[cmd.index("--certfile") + 1] == "/c/server.pem"
    with pytest.raises(servers.Unavailable, match="TLS"):
        servers.make("gunicorn-gthread", 1, port=8000, tls=cert)
    with pytest.raises(servers.Unavailable, match="WebSocket"):
        servers.make("gunicorn", 1, port=8000, ws="auto")


def test_certificate_is_p256_pkcs8_for_127_0_0_1(tmp_path: Path) -> None:
    cert = make_certificate(tmp_path / "tls")
    assert cert.key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, which granian needs
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(cert.cert), str(cert.key))  # the key matches the certificate
    text = subprocess.run(["openssl", "x509", "-in", str(cert.cert), "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "prime256v1" in text
    server.set_alpn_protocols(["http/1.1"])
    with socket.create_server(("127.0.0.1", 0)) as listener:  # a real handshake: the CA signed it, for 127.0.0.1
        accepted: list[str] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                accepted.append(tls.version() or "")
                try:
                    tls.recv(1)  # until the client closes
                except ConnectionResetError:  # closed with the server's TLS 1.3 session tickets unread (3.13)
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        agreed = negotiated(listener.getsockname()[1], cert)
        thread.join(5)
    assert agreed["version"] == accepted[0] and str(agreed["version"]).startswith("TLSv1.")
    assert agreed["alpn"] == "http/1.1" and agreed["cipher"]


@contextmanager
def ws_server(handler: Callable) -> Iterator[int]:
    """A WebSocket server (the websockets library, threads) on a free port, running `handler`."""
    from websockets.sync.server import serve

    with serve(handler, "127.0.0.1", 0, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(10)


@pytest.fixture(scope="module")
def ws_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if wsload.compiler() is None:
        pytest.skip("no C compiler to build the benchmark's WebSocket client")
    return wsload.build(tmp_path_factory.mktemp("wsclient"))


def test_ws_client_counts_checked_echoes(ws_client: Path) -> None:
    def echo(ws) -> None:  # noqa: ANN001
        for message in ws:
            ws.send(message)

    with ws_server(echo) as port:
        for size in (11, 300):  # a 2-byte and a 4-byte frame header
            r = wsload.run(ws_client, port, seconds=0.3, connections=4, size=size)
            assert r["size"] == size and r["echo_bytes"] == size + (2 if size < 126 else 4)
            assert r["messages"] > 0 and r["per_connection_min"] > 0 and r["total"] >= r["messages"]
            assert 0.29 < r["seconds"] < 1.0


def test_ws_client_fails_loudly_on_a_close_or_a_wrong_echo(ws_client: Path) -> None:
    def close_after_three(ws) -> None:  # noqa: ANN001
        for i, message in enumerate(ws):
            if i == 3:
                ws.close(1011, "bye")
                return
            ws.send(message)

    def wrong(ws) -> None:  # noqa: ANN001
        for message in ws:
            ws.send(message[::-1])

    with ws_server(close_after_three) as port:
        with pytest.raises(RuntimeError, match=r"close code 1011\) after 3 echoes"):
            wsload.run(ws_client, port, seconds=2, connections=1, size=11)
    with ws_server(wrong) as port:
        with pytest.raises(RuntimeError, match="not the echo"):
            wsload.run(ws_client, port, seconds=2, connections=1, size=11)
