"""Scenario 5, throughput: wrk against `GET /`, keep-alive and a new connection per request, -i 2.

Every server is started first, then all are measured in turn, round after round (A B C A B C ...: the
machine is noisy and the client shares its CPUs); each figure is the median of the rounds, with its
min and max. Connection-per-request uses wrk with
`Connection: close`, so every request pays a TCP handshake and (under leastconn) a hand-off from the
master.
"""

from __future__ import annotations

import traceback

from benchmarks.harness import servers, wrk
from benchmarks.harness.machine import wait_quiet
from benchmarks.harness.results import Context, fmt_spread, machine_line, table, write_json, write_md
from benchmarks.harness.rounds import interleave
from benchmarks.harness.stats import median, spread, spread_note

NAME = "throughput"
INSTANCES = 2
CONNECTIONS = 64
SHAPES = ("keepalive", "close")


def run(ctx: Context) -> dict:
    if wrk.missing_tools():
        data = write_json(ctx, f"cluster-{NAME}", {"skipped": f"missing {', '.join(wrk.missing_tools())}"})
        write_md(ctx, f"cluster-{NAME}", "# Throughput\n\nSkipped: wrk is not installed.")
        return data
    duration = 1.0 if ctx.quick else 5.0
    rounds = 2 if ctx.quick else 5
    results: dict[str, dict] = {}
    running: dict[str, servers.Server] = {}
    busy = wait_quiet(ctx.log, limit=ctx.quiet_limit)
    try:
        for name in ctx.servers:
            try:
                server = servers.make(name, INSTANCES)
            except servers.Unavailable as exc:
                results[name] = {"skipped": str(exc)}
                continue
            try:
                server.prepare()
                server.start()
                server.wait_ready(60)
                server.wait_serving(30)
                wrk.run(server.port, seconds=1.0, threads=2, connections=CONNECTIONS)  # warm-up
                running[name] = server
            except Exception as exc:  # noqa: BLE001 - the others are still measured
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
                server.stop()
        runs: dict[str, dict[str, list[dict]]] = {name: {shape: [] for shape in SHAPES} for name in running}
        for index, name in interleave(list(running), rounds):
            for shape in SHAPES:
                r = wrk.run(running[name].port, seconds=duration, threads=2, connections=CONNECTIONS,
                            close=shape == "close")
                runs[name][shape].append(r)
                ctx.log(f"  round {index}/{rounds} {name:15} {shape:9} {r['requests_per_s']:10,.0f} req/s")
    finally:
        for server in running.values():
            server.stop()
    for name in ctx.servers:
        if name in running:
            results[name] = summarize(runs[name])
    notes = []
    for shape in SHAPES:
        if "prun-leastconn" in running and "prun-shared" in running:
            note = spread_note("prun-leastconn", [r["requests_per_s"] for r in runs["prun-leastconn"][shape]],
                               "prun-shared", [r["requests_per_s"] for r in runs["prun-shared"][shape]])
            if note:
                notes.append(f"{shape}: {note}")
    data = write_json(ctx, f"cluster-{NAME}", {"instances": INSTANCES, "connections": CONNECTIONS,
                                               "duration": duration, "rounds": rounds, "cpu_busy_before": busy,
                                               "servers": results, "notes": notes})
    write_md(ctx, f"cluster-{NAME}", markdown(data))
    return data


def summarize(runs: dict[str, list[dict]]) -> dict:
    out: dict = {"rounds": len(runs[SHAPES[0]])}
    for shape in SHAPES:
        shaped = runs[shape]
        rps = [r["requests_per_s"] for r in shaped]
        out[shape] = {
            "requests_per_s": round(median(rps) or 0, 1),
            "requests_per_s_runs": rps,
            "spread": spread(rps),
            "p50_ms": median([r["p50_ms"] for r in shaped if r["p50_ms"] is not None]),
            "p99_ms": median([r["p99_ms"] for r in shaped if r["p99_ms"] is not None]),
            "socket_errors": {k: sum(r["socket_errors"].get(k, 0) for r in shaped)
                              for k in ("connect", "read", "write", "timeout")},
            "non2xx": sum(r["non2xx"] for r in shaped),
        }
    return out


def verdict(data: dict) -> list[tuple[str, bool]]:
    s = data.get("servers", {})
    lc, sh = s.get("prun-leastconn", {}), s.get("prun-shared", {})
    if "keepalive" not in lc or "keepalive" not in sh:
        return []
    a, b = lc["keepalive"]["requests_per_s"], sh["keepalive"]["requests_per_s"]
    return [(f"leastconn keep-alive {a:.0f} req/s within 5% of shared {b:.0f} req/s ({(a / b - 1) * 100:+.1f}%)",
             a >= 0.95 * b)]


def markdown(data: dict) -> str:
    lines = [
        "# Throughput",
        "",
        f"wrk, 2 threads, {data['connections']} connections, {data['duration']:g}s per run, `GET /`, "
        f"{data['instances']} workers; median (min-max) of {data['rounds']} interleaved rounds. The client "
        "shares the machine's CPUs with the server, so compare ratios, not absolute numbers.",
        "",
        machine_line(data),
        "",
    ]
    header = ["server", "keep-alive req/s", "p50 ms", "p99 ms", "close req/s", "p50 ms", "p99 ms",
              "socket errors (close)"]
    rows = []
    for name, r in data["servers"].items():
        if "keepalive" not in r:
            rows.append([name, r.get("skipped") or r.get("error")] + [None] * (len(header) - 2))
            continue
        k, c = r["keepalive"], r["close"]
        errs = ", ".join(f"{n} {v}" for n, v in c["socket_errors"].items() if v) or "0"
        rows.append([name, fmt_spread(k.get("spread")) or k["requests_per_s"], k["p50_ms"], k["p99_ms"],
                     fmt_spread(c.get("spread")) or c["requests_per_s"], c["p50_ms"], c["p99_ms"], errs])
    lines.append(table(header, rows))
    lc, sh = data["servers"].get("prun-leastconn", {}), data["servers"].get("prun-shared", {})
    if "close" in lc and "close" in sh:
        ratio = lc["close"]["requests_per_s"] / sh["close"]["requests_per_s"]
        lines += ["", f"Connection per request: leastconn does {ratio * 100:.0f}% of shared's rate "
                      f"({lc['close']['requests_per_s']:.0f} vs {sh['close']['requests_per_s']:.0f} req/s): at this "
                      "rate of new connections the leastconn workers accept them themselves, as under shared "
                      "(README, Balancing)."]
    if data.get("notes"):
        lines += ["", "Spread notes:", ""] + [f"- {note}" for note in data["notes"]]
    lines += ["", "Targets:", ""]
    lines += [f"- {'met' if good else 'NOT met'}: {text}" for text, good in verdict(data)]
    return "\n".join(lines)
