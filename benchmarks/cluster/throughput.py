"""Scenario 5, throughput: wrk against `GET /`, keep-alive and a new connection per request, -i 2.

prun's two balancing policies are measured in alternation over several rounds (the machine is noisy
and the client shares its CPUs), the peers once each. Connection-per-request uses wrk with
`Connection: close`, so every request pays a TCP handshake and (under leastconn) a hand-off from the
master.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import traceback

from benchmarks.cluster import procs
from benchmarks.cluster.common import Context, machine_line, median, table, wait_quiet, write_json, write_md

NAME = "throughput"
INSTANCES = 2
CONNECTIONS = 64
SHAPES = ("keepalive", "close")


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(port: int, shape: str, duration: float) -> dict:
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    if shape == "close":
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{port}/")
    proc = procs.REGISTRY.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    finally:
        procs.REGISTRY.kill_tree(proc)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"wrk said: {out[-400:]}")
    result: dict = {"requests_per_s": float(rps.group(1))}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        result[f"p{q}_ms"] = round(_seconds(*m.groups()) * 1000, 3) if m else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                       map(int, errors.groups()))) if errors else {}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def measure(ctx: Context, name: str, duration: float) -> dict:
    server = procs.make(name, INSTANCES)
    busy = wait_quiet(ctx)
    try:
        server.start()
        server.wait_ready(30)
        server.wait_serving(30)
        wrk(server.port, "keepalive", 1.0)  # warm-up
        out: dict = {"cpu_busy_before": busy}
        for shape in SHAPES:
            out[shape] = wrk(server.port, shape, duration)
            ctx.log(f"  {name} {shape}: {out[shape]['requests_per_s']:.0f} req/s, p99 {out[shape]['p99_ms']} ms")
        return out
    finally:
        server.stop()


def run(ctx: Context) -> dict:
    if not shutil.which("wrk"):
        data = write_json(ctx, NAME, {"skipped": "wrk is not installed"})
        write_md(ctx, NAME, "# Throughput\n\nSkipped: wrk is not installed.")
        return data
    duration = 3.0 if ctx.quick else 5.0
    rounds = 1 if ctx.quick else 3
    prun_names = [n for n in ctx.servers if n.startswith("prun-")]
    peers = [n for n in ctx.servers if not n.startswith("prun-")]
    results: dict[str, dict] = {}
    rounds_data: dict[str, list[dict]] = {n: [] for n in prun_names}
    for i in range(rounds):
        for name in (prun_names if i % 2 == 0 else prun_names[::-1]):
            ctx.log(f"{NAME}: {name}, round {i + 1}/{rounds}")
            try:
                rounds_data[name].append(measure(ctx, name, duration))
            except Exception as exc:  # noqa: BLE001
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
    for name, runs in rounds_data.items():
        if runs:
            results[name] = summarize(runs)
    for name in peers:
        ctx.log(f"{NAME}: {name}")
        try:
            results[name] = summarize([measure(ctx, name, duration)])
        except procs.Unavailable as exc:
            results[name] = {"skipped": str(exc)}
        except Exception as exc:  # noqa: BLE001
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
    data = write_json(ctx, NAME, {"instances": INSTANCES, "connections": CONNECTIONS, "duration": duration,
                                  "rounds": rounds, "servers": results})
    write_md(ctx, NAME, markdown(data))
    return data


def summarize(runs: list[dict]) -> dict:
    out: dict = {"rounds": len(runs), "cpu_busy_before": [r["cpu_busy_before"] for r in runs]}
    for shape in SHAPES:
        shaped = [r[shape] for r in runs]
        out[shape] = {
            "requests_per_s": round(median([r["requests_per_s"] for r in shaped]) or 0, 1),
            "requests_per_s_runs": [r["requests_per_s"] for r in shaped],
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
        f"{data['instances']} workers. prun's policies: median of {data['rounds']} alternating rounds; peers: one "
        "run. The client shares the machine's CPUs with the server, so compare ratios, not absolute numbers.",
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
        rows.append([name, k["requests_per_s"], k["p50_ms"], k["p99_ms"], c["requests_per_s"], c["p50_ms"],
                     c["p99_ms"], errs])
    lines.append(table(header, rows))
    lc, sh = data["servers"].get("prun-leastconn", {}), data["servers"].get("prun-shared", {})
    if "close" in lc and "close" in sh:
        ratio = lc["close"]["requests_per_s"] / sh["close"]["requests_per_s"]
        lines += ["", f"Connection per request: leastconn does {ratio * 100:.0f}% of shared's rate "
                      f"({lc['close']['requests_per_s']:.0f} vs {sh['close']['requests_per_s']:.0f} req/s): every "
                      "connection is accepted by the master and passed to a worker over its control channel."]
    lines += ["", "Targets:", ""]
    lines += [f"- {'met' if good else 'NOT met'}: {text}" for text, good in verdict(data)]
    return "\n".join(lines)
