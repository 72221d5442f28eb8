"""Scenario 4, start-up: from the command to the first 200, and at -i 8 until every worker is ready.

"Every worker ready" is each server's own word for it: prun's `ready: N workers` line; uvicorn's and
gunicorn's per-worker "Application startup complete" lines; granian's "Started worker-N" lines. PM2
prints nothing of the kind, so for it the time is when 8 distinct worker pids have answered; its daemon
is started (`pm2 ping`) before the clock starts, as it would already run on a PM2 host. Each
measurement is repeated (3 times, --quick once) and the median is reported.
"""

from __future__ import annotations

import time
import traceback

from benchmarks.harness import servers
from benchmarks.harness.machine import wait_quiet
from benchmarks.harness.results import Context, fmt_spread, machine_line, table, write_json, write_md
from benchmarks.harness.stats import median, spread

NAME = "startup"


def first_200(server: servers.Server, began: float, timeout: float = 30.0) -> float:
    return server.wait_serving(timeout) - began


def run(ctx: Context) -> dict:
    repeats = 1 if ctx.quick else 3
    results: dict[str, dict] = {}
    for name in ctx.servers:
        ctx.log(f"{NAME}: {name}, {repeats} x (-i 2, -i 8)")
        runs: dict[str, list[float]] = {"first_200_i2": [], "first_200_i8": [], "all_ready_i8": []}
        entry: dict = {"runs": runs}
        results[name] = entry
        try:
            for _ in range(repeats):
                for n in (2, 8):
                    try:
                        server = servers.make(name, n)
                    except servers.Unavailable as exc:
                        results[name] = {"skipped": str(exc)}
                        raise StopIteration from None
                    entry["label"] = server.label
                    entry["ready_method"] = server.ready_method
                    wait_quiet(ctx.log, limit=min(15, ctx.quiet_limit))
                    try:
                        server.prepare()
                        began = server.start()
                        runs[f"first_200_i{n}"].append(first_200(server, began))
                        if n == 8:
                            runs["all_ready_i8"].append(server.wait_ready(60) - began)
                    finally:
                        server.stop()
                    time.sleep(0.3)
        except StopIteration:
            continue
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        for key, values in runs.items():
            entry[key] = round(median(values), 3) if values else None
            entry[f"{key}_spread"] = spread(values)
        ctx.log(f"  first 200 (-i 2) {entry['first_200_i2']}s, all ready (-i 8) {entry['all_ready_i8']}s")
    data = write_json(ctx, f"cluster-{NAME}", {"repeats": repeats, "servers": results})
    write_md(ctx, f"cluster-{NAME}", markdown(data))
    return data


def markdown(data: dict) -> str:
    lines = [
        "# Start-up",
        "",
        "Seconds from launching the command: median (min-max) of "
        f"{data['repeats']} run(s). The first 200 is polled with a new connection every 5 ms.",
        "",
        machine_line(data),
        "",
    ]
    header = ["server", "first 200 (-i 2)", "first 200 (-i 8)", "all 8 workers ready", "ready means"]
    rows = []
    for name, e in data["servers"].items():
        if "skipped" in e:
            rows.append([name, "skipped: " + e["skipped"], None, None, None])
            continue
        rows.append([name, *(fmt_spread(e.get(f"{k}_spread"), 3) or e.get(k)
                             for k in ("first_200_i2", "first_200_i8", "all_ready_i8")),
                     e.get("ready_method", "") if not e.get("error") else e["error"]])
    lines.append(table(header, rows))
    return "\n".join(lines)
