"""Scenario 6, reload time and latency during reloads.

Each server (2 workers) is reloaded 5 times (--quick 3), 1.5 s apart, under 16 busy keep-alive
connections. A reload's time runs from the signal (or `pm2 reload`) until the last old worker has
exited; prun also reports its own figure in its `reload complete ... in Xs` line. Latencies of the
requests that ended during a reload are set beside those that ended between reloads.
"""

from __future__ import annotations

import traceback

from benchmarks.cluster.reload_loss import reload_under_load
from benchmarks.harness import servers
from benchmarks.harness.machine import wait_quiet
from benchmarks.harness.results import Context, machine_line, table, write_json, write_md
from benchmarks.harness.stats import median

NAME = "reload-time"
INSTANCES = 2


def run(ctx: Context) -> dict:
    reloads = 3 if ctx.quick else 5
    results: dict[str, dict] = {}
    for name in ctx.servers:
        ctx.log(f"{NAME}: {name}, {reloads} reloads")
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
            r = reload_under_load(ctx, server, "keepalive", reloads, gap=1.5)
            results[name] = {
                "label": server.label,
                "cpu_busy_before": busy,
                "reload_method": server.reload_method,
                "reloads": r["reloads_done"],
                "error": r["error"],
                "reload_seconds": r["reload_seconds"],
                "reload_seconds_median": r["reload_seconds_median"],
                "reload_seconds_max": r["reload_seconds_max"],
                "reload_seconds_reported_median": median(r["reload_seconds_reported"]),
                "failed": r["failed"],
                "during": r["latency_during_reload"],
                "between": r["latency_outside_reload"],
            }
            ctx.log(f"  reload median {r['reload_seconds_median'] or 0:.3f}s; p99 during "
                    f"{r['latency_during_reload']['p99_ms']} ms vs between {r['latency_outside_reload']['p99_ms']} ms")
        except Exception as exc:  # noqa: BLE001
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        finally:
            server.stop()
    data = write_json(ctx, f"cluster-{NAME}", {"instances": INSTANCES, "reloads": reloads, "servers": results})
    write_md(ctx, f"cluster-{NAME}", markdown(data))
    return data


def markdown(data: dict) -> str:
    lines = [
        "# Reload time and latency during reloads",
        "",
        f"{data['reloads']} reloads, 1.5 s apart, of {data['instances']} workers under 16 busy keep-alive "
        "connections (`GET /`). Reload time: from the signal to the last old worker gone (seconds). Latency in ms.",
        "",
        machine_line(data),
        "",
    ]
    header = ["server", "reload s (median)", "reload s (max)", "server's own figure", "failed",
              "p50 during", "p99 during", "max during", "p50 between", "p99 between", "max between"]
    rows = []
    for name, r in data["servers"].items():
        if "during" not in r:
            rows.append([name, r.get("skipped") or r.get("error")] + [None] * (len(header) - 2))
            continue
        d, b = r["during"], r["between"]
        rows.append([name, r["reload_seconds_median"], r["reload_seconds_max"], r["reload_seconds_reported_median"],
                     r["failed"], d["p50_ms"], d["p99_ms"], d["max_ms"], b["p50_ms"], b["p99_ms"], b["max_ms"]])
    lines.append(table(header, rows))
    methods = "; ".join(f"{n}: {r['reload_method']}" for n, r in data["servers"].items() if "reload_method" in r)
    lines += ["", f"Reload method: {methods}."]
    errors = [f"- {n}: {r['error']}" for n, r in data["servers"].items() if r.get("error")]
    if errors:
        lines += ["", *errors]
    return "\n".join(lines)
