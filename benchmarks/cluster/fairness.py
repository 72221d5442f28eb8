"""Scenario 2, fairness: the CPU-bound endpoint under a fixed request rate (open loop).

Each server runs 4 workers (two per CPU on the reference machine, so that balancing has a choice).
The load client sends `GET /cpu` at a fixed rate on a new connection per request, whatever the replies
do, and measures each latency from the moment the request was due. Every reply names its worker
(x-worker-pid); workers that served nothing count as 0. Reported: requests per worker, max/min ratio,
p50/p99 latency.
"""

from __future__ import annotations

import statistics
import time
import traceback

from benchmarks.harness import procs, servers
from benchmarks.harness.machine import wait_quiet
from benchmarks.harness.results import Context, machine_line, table, write_json, write_md
from benchmarks.harness.stats import latency_summary

NAME = "fairness"
INSTANCES = 4
RATE = 250.0


def service_ms(port: int, samples: int = 30) -> float:
    """Median milliseconds of one /cpu request on an idle server."""
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        procs.get(port, "/cpu", timeout=5)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def run(ctx: Context) -> dict:
    duration = 4.0 if ctx.quick else 10.0
    results: dict[str, dict] = {}
    for name in ctx.servers:
        ctx.log(f"{NAME}: {name}, {INSTANCES} workers, {RATE:g} req/s of /cpu for {duration:g}s")
        try:
            server = servers.make(name, INSTANCES)
        except servers.Unavailable as exc:
            results[name] = {"skipped": str(exc)}
            continue
        try:
            busy = wait_quiet(ctx.log, limit=ctx.quiet_limit)
            server.start()
            server.wait_ready(30)
            server.wait_serving(30)
            service = service_ms(server.port)
            workers = server.worker_pids()
            out = ctx.tmp / f"{NAME}-{name}.json"
            load = procs.run_load(server.port, out, rate=RATE, path="/cpu", duration=duration)
            try:
                load.wait(duration + 30)
            finally:
                r = procs.finish_load(load, out)
            counts = {str(pid): 0 for pid in workers}
            counts.update(r["pids"])
            values = sorted(counts.values())
            ratio = (values[-1] / values[0]) if values and values[0] else None
            lat = latency_summary(r["latency"])
            results[name] = {
                "label": server.label,
                "cpu_busy_before": busy,
                "service_ms": round(service, 3),
                "ok": r["ok"],
                "failed": r["failed"],
                "failures": {k: v for k, v in r["failures"].items() if v},
                "not_sent": r["skipped"],
                "per_worker": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                "max_min_ratio": round(ratio, 3) if ratio else None,
                "latency": lat,
            }
            ctx.log(f"  counts {values}, max/min {ratio or float('inf'):.3f}, p50 {lat['p50_ms']} ms, "
                    f"p99 {lat['p99_ms']} ms, failed {r['failed']}")
        except Exception as exc:  # noqa: BLE001
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        finally:
            server.stop()
    data = write_json(ctx, f"cluster-{NAME}", {"instances": INSTANCES, "rate": RATE, "duration": duration, "path": "/cpu",
                                  "servers": results})
    write_md(ctx, f"cluster-{NAME}", markdown(data))
    return data


def verdict(data: dict) -> list[tuple[str, bool]]:
    s = data["servers"]
    checks = []
    lc, sh = s.get("prun-leastconn", {}), s.get("prun-shared", {})
    if lc.get("max_min_ratio") is not None or "per_worker" in lc:
        ratio = lc.get("max_min_ratio")
        checks.append((f"prun leastconn max/min = {ratio} <= 1.15", ratio is not None and ratio <= 1.15))
    if "latency" in lc and "latency" in sh:
        a, b = lc["latency"]["p99_ms"], sh["latency"]["p99_ms"]
        checks.append((f"prun leastconn p99 {a} ms no worse than shared {b} ms", a is not None and b is not None
                       and a <= b))
    return checks


def markdown(data: dict) -> str:
    lines = [
        "# Fairness",
        "",
        f"`GET /cpu` (chained SHA-256 rounds, a few ms of CPU) at a fixed {data['rate']:g} requests/s for "
        f"{data['duration']:g}s, open loop, a new connection per request, {data['instances']} workers per server. "
        "Latency counts from the moment each request was due. `service ms` is one request on the idle server.",
        "",
        machine_line(data),
        "",
    ]
    header = ["server", "service ms", "ok", "failed", "requests per worker", "max/min", "p50 ms", "p99 ms",
              "max ms"]
    rows = []
    for name, r in data["servers"].items():
        if "per_worker" not in r:
            rows.append([name, r.get("skipped") or r.get("error")] + [None] * (len(header) - 2))
            continue
        lat = r["latency"]
        rows.append([name, r["service_ms"], r["ok"], r["failed"], " / ".join(str(v) for v in r["per_worker"].values()),
                     r["max_min_ratio"] if r["max_min_ratio"] is not None else "inf (a worker served 0)",
                     lat["p50_ms"], lat["p99_ms"], lat["max_ms"]])
    lines.append(table(header, rows))
    lines += ["", "Targets:", ""]
    lines += [f"- {'met' if good else 'NOT met'}: {text}" for text, good in verdict(data)]
    return "\n".join(lines)
