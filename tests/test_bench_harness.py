"""The benchmark harness's own arithmetic: wrk's report parsed, spreads, ratios, the noise note, rounds
interleaved, the busy-machine gate (benchmarks/harness)."""

from __future__ import annotations

from benchmarks.harness import machine, rounds, stats, wrk
from benchmarks.harness.results import Context, fmt_spread, gate

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
