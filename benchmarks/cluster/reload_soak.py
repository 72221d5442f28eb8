"""Extra scenario (not in the default list), reload soak: prun's two policies only, the reload-loss
runs repeated, so that a rare loss shows up.

    python -m benchmarks.cluster reload-soak [--rounds R] [--reloads N]

Each round runs, for prun --balance shared and leastconn in turn, N reloads (default 20) under the
keep-alive and the connection-per-request load of the reload-loss scenario, on a fresh master.
"""

from __future__ import annotations

import traceback

from benchmarks.cluster.reload_loss import INSTANCES, SHAPES, reload_under_load
from benchmarks.harness import servers
from benchmarks.harness.load import KINDS
from benchmarks.harness.results import Context, machine_line, table, write_json, write_md

NAME = "reload-soak"
POLICIES = ("prun-shared", "prun-leastconn")


def run(ctx: Context) -> dict:
    reloads = ctx.reloads or (5 if ctx.quick else 20)
    rounds = ctx.rounds or (1 if ctx.quick else 3)
    runs: list[dict] = []
    for i in range(rounds):
        for name in POLICIES:
            ctx.log(f"{NAME}: round {i + 1}/{rounds}, {name}, {reloads} reloads x {len(SHAPES)} load shapes")
            server = servers.make(name, INSTANCES)
            try:
                server.start()
                server.wait_ready(30)
                server.wait_serving(30)
                for shape in SHAPES:
                    r = reload_under_load(ctx, server, shape, reloads)
                    runs.append({"round": i + 1, "server": name, "shape": shape, "reloads": r["reloads_done"],
                                 "ok": r["ok"], "failed": r["failed"], "failures": r["failures"],
                                 "samples": r["samples"], "error": r["error"]})
                    ctx.log(f"  {shape}: {r['ok']} ok, {r['failed']} failed")
            except Exception as exc:  # noqa: BLE001
                runs.append({"round": i + 1, "server": name, "error": f"{type(exc).__name__}: {exc}"})
                traceback.print_exc()
            finally:
                server.stop()
    totals = {}
    for name in POLICIES:
        for shape in SHAPES:
            mine = [r for r in runs if r.get("server") == name and r.get("shape") == shape]
            totals[f"{name} {shape}"] = {
                "runs": len(mine),
                "reloads": sum(r["reloads"] for r in mine),
                "ok": sum(r["ok"] for r in mine),
                "failed": sum(r["failed"] for r in mine),
                "runs_with_failures": sum(1 for r in mine if r["failed"]),
                "failures": {k: sum(r["failures"][k] for r in mine) for k in KINDS},
            }
    data = write_json(ctx, f"cluster-{NAME}", {"rounds": rounds, "reloads": reloads, "instances": INSTANCES, "runs": runs,
                                  "totals": totals})
    write_md(ctx, f"cluster-{NAME}", markdown(data))
    return data


def markdown(data: dict) -> str:
    lines = [
        "# Reload soak (prun only)",
        "",
        f"{data['rounds']} rounds of the reload-loss runs for prun's two policies: {data['reloads']} reloads per run, "
        f"{data['instances']} workers, 16 clients, keep-alive and connection-per-request load.",
        "",
        machine_line(data),
        "",
    ]
    header = ["policy and load", "runs", "reloads", "ok", "failed", "runs with failures"] + list(KINDS)
    rows = [[key, t["runs"], t["reloads"], t["ok"], f"**{t['failed']}**", t["runs_with_failures"]]
            + [t["failures"][k] for k in KINDS] for key, t in data["totals"].items()]
    lines.append(table(header, rows))
    lines += ["", "Per run (failed requests): " + ", ".join(
        f"{r['server']} {r.get('shape', '')} #{r['round']}: {r.get('failed', r.get('error'))}" for r in data["runs"])]
    samples = [f"- {r['server']} {r['shape']} #{r['round']} `{kind}` e.g. {s[0]}"
               for r in data["runs"] for kind, s in r.get("samples", {}).items()]
    if samples:
        lines += ["", *samples]
    return "\n".join(lines)
