"""Scenario 1, reload loss: N reloads under load; every failed request counted by kind.

Each server runs 2 workers of apps/tiny. For each load shape (keep-alive: 16 busy keep-alive
connections; close: 16 loops opening a new connection per request) the load client starts, runs 1 s,
then the server is reloaded N times in a row (each reload waited for until its last old worker is
gone, then 0.3 s of rest), then the load runs 0.5 s more and stops. The negative control replaces the
reload by a SIGKILL of the whole prun tree and a fresh start, which must show up as failures.
"""

from __future__ import annotations

import time
import traceback

from benchmarks.harness import procs, servers
from benchmarks.harness.load import KINDS
from benchmarks.harness.results import Context, machine_line, table, write_json, write_md
from benchmarks.harness.stats import latency_summary, median, split_by_windows

NAME = "reload-loss"
SHAPES = ("keepalive", "close")
INSTANCES = 2
CONCURRENCY = 16
GAP = 0.3


def reload_under_load(ctx: Context, server: servers.Server, shape: str, reloads: int,
                      concurrency: int = CONCURRENCY, gap: float = GAP) -> dict:
    """Run `reloads` reloads of a running server under one load shape; the load client's counts."""
    out = ctx.tmp / f"{NAME}-{server.name}-{shape}.json"
    load = procs.run_load(server.port, out, mode=shape, concurrency=concurrency, duration=10 + reloads * 35)
    windows: list[tuple[float, float]] = []
    durations: list[float] = []
    reported: list[float] = []
    error = None
    try:
        time.sleep(1.0)
        for _ in range(reloads):
            began = time.monotonic()
            info = server.reload(timeout=30)
            windows.append((began, time.monotonic()))
            durations.append(info["seconds"])
            if "reported" in info:
                reported.append(info["reported"])
            time.sleep(gap)
        time.sleep(0.5)
    except Exception as exc:  # noqa: BLE001 - a server that cannot reload is a result, not a crash
        error = f"{type(exc).__name__}: {exc}"
        ctx.log(f"  {server.name} {shape}: {error}")
    result = procs.finish_load(load, out)
    inside, outside = split_by_windows(result["done_at"], result["latency"], windows)
    seconds = result["ended"] - result["began"]
    return {
        "shape": shape,
        "concurrency": concurrency,
        "reloads_asked": reloads,
        "reloads_done": len(durations),
        "error": error,
        "ok": result["ok"],
        "failed": result["failed"],
        "failures": result["failures"],
        "samples": result["samples"],
        "connections": result["connections"],
        "requests_per_s": round(result["ok"] / seconds, 1) if seconds > 0 else None,
        "reload_seconds": [round(d, 4) for d in durations],
        "reload_seconds_median": median(durations),
        "reload_seconds_max": max(durations) if durations else None,
        "reload_seconds_reported": reported,
        "latency_during_reload": latency_summary(inside),
        "latency_outside_reload": latency_summary(outside),
        "workers_seen": len(result["pids"]),
    }


def run(ctx: Context) -> dict:
    reloads = ctx.reloads or (5 if ctx.quick else 20)
    names = list(ctx.servers) + ["control-kill-restart"]
    results: dict[str, dict] = {}
    for name in names:
        ctx.log(f"{NAME}: {name}, {reloads} reloads x {len(SHAPES)} load shapes")
        try:
            server = servers.make(name, INSTANCES)
        except servers.Unavailable as exc:
            results[name] = {"skipped": str(exc)}
            ctx.log(f"  {name} skipped: {exc}")
            continue
        entry: dict = {"label": server.label, "reload_method": server.reload_method, "shapes": {}}
        results[name] = entry
        try:
            server.start()
            server.wait_ready(30)
            server.wait_serving(30)
            for shape in SHAPES:
                entry["shapes"][shape] = r = reload_under_load(ctx, server, shape, reloads)
                ctx.log(f"  {shape}: {r['ok']} ok, {r['failed']} failed {_nonzero(r['failures'])}, "
                        f"reload median {r['reload_seconds_median'] or 0:.2f}s")
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__name__}: {exc}"
            ctx.log(f"  {name} failed: {entry['error']}")
            traceback.print_exc()
        finally:
            server.stop()
    data = {"reloads": reloads, "instances": INSTANCES, "concurrency": CONCURRENCY, "servers": results}
    data = write_json(ctx, f"cluster-{NAME}", data)
    write_md(ctx, f"cluster-{NAME}", markdown(data))
    return data


def _nonzero(failures: dict) -> str:
    parts = [f"{k}={v}" for k, v in failures.items() if v]
    return f"({', '.join(parts)})" if parts else ""


def verdict(data: dict) -> list[tuple[str, bool]]:
    checks = []
    for name in ("prun-shared", "prun-leastconn"):
        entry = data["servers"].get(name, {})
        for shape in SHAPES:
            r = entry.get("shapes", {}).get(shape)
            if r is not None:
                good = r["failed"] == 0 and r["reloads_done"] == r["reloads_asked"] and not r["error"]
                checks.append((f"{name} {shape}: 0 failed requests over {r['reloads_done']} reloads", good))
    control = data["servers"].get("control-kill-restart", {}).get("shapes", {})
    if control:
        checks.append(("negative control shows losses",
                       all(r["failed"] > 0 for r in control.values())))
    return checks


def markdown(data: dict) -> str:
    lines = [
        "# Reload loss",
        "",
        f"{data['reloads']} reloads in a row of a server with {data['instances']} workers serving `GET /`, "
        f"under two load shapes of {data['concurrency']} concurrent clients: **keep-alive** (each connection sends "
        "its next request as soon as the reply is read) and **close** (a new connection per request). A reload is "
        "waited for until the last old worker has exited. Failures are counted by kind: "
        + ", ".join(f"`{k}`" for k in KINDS) + " (see `benchmarks/harness/load.py`).",
        "",
        machine_line(data),
        "",
    ]
    header = ["server", "load", "reloads", "ok", "failed"] + list(KINDS) + ["req/s", "reload s (median)"]
    rows = []
    notes = []
    for name, entry in data["servers"].items():
        if "skipped" in entry:
            rows.append([name, "-", "skipped"] + [None] * (len(header) - 3))
            notes.append(f"- {name}: skipped: {entry['skipped']}")
            continue
        for shape, r in entry.get("shapes", {}).items():
            rows.append([name, shape, f"{r['reloads_done']}/{r['reloads_asked']}", r["ok"], f"**{r['failed']}**"]
                        + [r["failures"][k] for k in KINDS]
                        + [r["requests_per_s"], r["reload_seconds_median"]])
            if r["error"]:
                notes.append(f"- {name} ({shape}): {r['error']}")
            for kind, samples in r["samples"].items():
                notes.append(f"- {name} ({shape}) `{kind}` e.g. {samples[0]}")
        if entry.get("error"):
            notes.append(f"- {name}: {entry['error']}")
    lines.append(table(header, rows))
    lines.append("")
    lines.append("Reload method per server: " + "; ".join(
        f"{name}: {entry['reload_method']}" for name, entry in data["servers"].items() if "reload_method" in entry)
        + ".")
    if notes:
        lines += ["", "Details:", ""] + notes
    lines += ["", "Targets:", ""]
    lines += [f"- {'met' if good else 'NOT met'}: {text}" for text, good in verdict(data)]
    return "\n".join(lines)
