"""Plots (PNG) and cluster-summary.md, from whichever cluster-*.json results are present."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.cluster import fairness, memory, reload_loss, throughput  # noqa: E402
from benchmarks.harness.results import Context, machine_line, table, write_md  # noqa: E402

NAME = "summary"
COLORS = {"prun-shared": "#1f77b4", "prun-leastconn": "#2ca02c", "uvicorn": "#9467bd", "gunicorn": "#8c564b",
          "granian": "#e377c2", "pm2": "#ff7f0e", "control-kill-restart": "#d62728"}


def load(ctx: Context, name: str) -> dict | None:
    path = ctx.out_dir / f"cluster-{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot_fairness(ctx: Context, data: dict) -> str | None:
    servers = {n: r for n, r in data["servers"].items() if "per_worker" in r}
    if not servers:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / data["instances"]
    for i, (name, r) in enumerate(servers.items()):
        counts = sorted(r["per_worker"].values(), reverse=True)
        for j, count in enumerate(counts):
            ax.bar(i - 0.4 + width * (j + 0.5), count, width * 0.9, color=COLORS.get(name, "grey"))
        ratio = r["max_min_ratio"]
        ax.text(i, max(counts) * 1.02, f"max/min {ratio:.2f}" if ratio else "max/min inf", ha="center", fontsize=8)
    ax.set_xticks(range(len(servers)), list(servers), fontsize=9)
    ax.set_ylabel("requests served")
    ax.set_title(f"Requests per worker: /cpu at {data['rate']:g} req/s for {data['duration']:g}s, "
                 f"{data['instances']} workers")
    fig.tight_layout()
    path = ctx.out_dir / "cluster-fairness.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_reload_failures(ctx: Context, data: dict) -> str | None:
    servers = {n: e for n, e in data["servers"].items() if e.get("shapes")}
    if not servers:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    shapes = reload_loss.SHAPES
    width = 0.38
    for i, (name, entry) in enumerate(servers.items()):
        for j, shape in enumerate(shapes):
            r = entry["shapes"].get(shape)
            if r is None:
                continue
            x = i - 0.2 + j * width
            ax.bar(x, r["failed"], width * 0.9, color=COLORS.get(name, "grey"), alpha=1.0 if j == 0 else 0.55,
                   hatch=None if j == 0 else "//")
            ax.text(x, max(r["failed"], 0.6) * 1.15, str(r["failed"]), ha="center", fontsize=8)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, None)
    ax.set_xticks(range(len(servers)), list(servers), fontsize=8)
    ax.set_ylabel("failed requests (symlog)")
    ax.set_title(f"Failed requests over {data['reloads']} reloads (solid: keep-alive, hatched: new connection "
                 "per request)", fontsize=10)
    fig.tight_layout()
    path = ctx.out_dir / "cluster-reload-failures.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_memory(ctx: Context, data: dict) -> str | None:
    servers = {n: s for n, s in data["servers"].items() if "skipped" not in s and s}
    if not servers:
        return None
    metrics = [("master_rss", "master RSS"), ("worker_uss_median", "worker USS (median)"),
               ("tree_pss_sum", "whole tree PSS")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(13, 4.2))
    sizes = [str(n) for n in data["sizes"]]
    width = 0.8 / len(servers)
    for ax, (key, title) in zip(axes, metrics):
        for i, (name, s) in enumerate(servers.items()):
            values = [s.get(n, {}).get(key) or 0 for n in sizes]
            xs = [k - 0.4 + width * (i + 0.5) for k in range(len(sizes))]
            ax.bar(xs, values, width * 0.9, color=COLORS.get(name, "grey"), label=name)
        ax.set_xticks(range(len(sizes)), [f"-i {n}" for n in sizes])
        ax.set_title(title + " (MiB)", fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = ctx.out_dir / "cluster-memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_throughput(ctx: Context, data: dict) -> str | None:
    servers = {n: r for n, r in data.get("servers", {}).items() if "keepalive" in r}
    if not servers:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, (name, r) in enumerate(servers.items()):
        for j, shape in enumerate(throughput.SHAPES):
            ax.bar(i - 0.2 + j * 0.4, r[shape]["requests_per_s"], 0.36, color=COLORS.get(name, "grey"),
                   alpha=1.0 if j == 0 else 0.55, hatch=None if j == 0 else "//")
    ax.set_xticks(range(len(servers)), list(servers), fontsize=9)
    ax.set_ylabel("requests/s")
    ax.set_title("wrk GET / (solid: keep-alive, hatched: Connection: close)", fontsize=10)
    fig.tight_layout()
    path = ctx.out_dir / "cluster-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def policy_choice(results: dict[str, dict]) -> tuple[str, list[str]]:
    """Which balancing policy the numbers favour, and the comparisons behind it."""
    points = {"shared": 0, "leastconn": 0}
    lines = []

    def compare(what: str, shared: float | None, leastconn: float | None, higher_better: bool,
                tolerance: float) -> None:
        if shared is None or leastconn is None:
            return
        if abs(shared - leastconn) <= tolerance * max(abs(shared), abs(leastconn), 1e-9):
            winner = "tie"
        elif (leastconn > shared) == higher_better:
            winner = "leastconn"
        else:
            winner = "shared"
        if winner != "tie":
            points[winner] += 1
        lines.append(f"- {what}: shared {shared:g}, leastconn {leastconn:g} -> {winner}")

    rl, soak = results.get("reload-loss"), results.get("reload-soak")
    if rl or soak:
        totals: dict[str, int | None] = {}
        reloads = 0
        for policy in ("shared", "leastconn"):
            shapes = (rl or {}).get("servers", {}).get(f"prun-{policy}", {}).get("shapes", {})
            soaked = [t for key, t in (soak or {}).get("totals", {}).items() if key.startswith(f"prun-{policy} ")]
            found = list(shapes.values()) + soaked
            totals[policy] = sum(r["failed"] for r in found) if found else None
            reloads = sum(r.get("reloads_done", r.get("reloads", 0)) for r in found)
        compare(f"failed requests over {reloads} reloads each (reload-loss and reload-soak)", totals["shared"],
                totals["leastconn"], False, 0)
    fa = results.get("fairness")
    if fa:
        sh, lc = fa["servers"].get("prun-shared", {}), fa["servers"].get("prun-leastconn", {})
        if "per_worker" in sh and "per_worker" in lc:
            inf = float("inf")
            compare("fairness max/min (/cpu)", sh["max_min_ratio"] or inf, lc["max_min_ratio"] or inf, False, 0.02)
            compare("fairness p99 ms (/cpu)", sh["latency"]["p99_ms"], lc["latency"]["p99_ms"], False, 0.05)
    tp = results.get("throughput")
    if tp and "servers" in tp:
        sh, lc = tp["servers"].get("prun-shared", {}), tp["servers"].get("prun-leastconn", {})
        for shape, label in (("keepalive", "keep-alive"), ("close", "connection per request")):
            if shape in sh and shape in lc:
                compare(f"throughput req/s, {label}", sh[shape]["requests_per_s"], lc[shape]["requests_per_s"],
                        True, 0.05)
    if points["shared"] == points["leastconn"]:
        choice = "neither clearly (a tie on these numbers)"
    else:
        choice = max(points, key=points.get)
    return choice, lines


def run(ctx: Context) -> dict:
    results = {name: load(ctx, name) for name in
               ("reload-loss", "reload-soak", "fairness", "memory", "startup", "throughput", "reload-time")}
    images = {}
    if results["fairness"]:
        images["fairness"] = plot_fairness(ctx, results["fairness"])
    if results["reload-loss"]:
        images["reload-loss"] = plot_reload_failures(ctx, results["reload-loss"])
    if results["memory"]:
        images["memory"] = plot_memory(ctx, results["memory"])
    if results["throughput"]:
        images["throughput"] = plot_throughput(ctx, results["throughput"])
    write_md(ctx, f"cluster-{NAME}", summary(results, images))
    return {"images": images}


def summary(results: dict[str, dict | None], images: dict[str, str | None]) -> str:
    lines = [
        "# prun cluster benchmarks: summary",
        "",
        "Run them with `python -m benchmarks.cluster` (all scenarios, about 15 minutes on 2 CPUs) or "
        "`python -m benchmarks.cluster --quick`, and the opt-in `python -m benchmarks.cluster reload-soak plots`; "
        "one scenario with e.g. `python -m benchmarks.cluster fairness`. "
        "Every number below comes from the `cluster-*.json` files next to this one, written by the last run of "
        "each scenario. The machine is small and noisy and the clients share its CPUs: compare servers within a "
        "table, not across machines.",
        "",
    ]
    first = next((r for r in results.values() if r and "machine" in r), None)
    if first:
        lines += [machine_line(first), ""]

    rl = results.get("reload-loss")
    if rl:
        lines += ["## Reload loss", "", f"Failed requests over {rl['reloads']} reloads, by load shape "
                  "([details](cluster-reload-loss.md)).", ""]
        rows = []
        for name, e in rl["servers"].items():
            if "skipped" in e:
                rows.append([name, "skipped: " + e["skipped"], None, None])
                continue
            shapes = e.get("shapes", {})
            cell = {s: (shapes[s]["failed"] if s in shapes else None) for s in reload_loss.SHAPES}
            med = [shapes[s]["reload_seconds_median"] for s in shapes]
            rows.append([name, cell["keepalive"], cell["close"], med[0] if med else e.get("error")])
        lines += [table(["server", "failed (keep-alive)", "failed (connection per request)", "reload s (median)"],
                        rows), ""]
        if images.get("reload-loss"):
            lines += [f"![failed requests per server]({images['reload-loss']})", ""]
        lines += [f"- {'met' if g else 'NOT met'}: {t}" for t, g in reload_loss.verdict(rl)] + [""]

    soak = results.get("reload-soak")
    if soak:
        lines += ["## Reload soak (prun only)", "", f"The reload-loss runs for prun repeated {soak['rounds']} times, "
                  f"{soak['reloads']} reloads each ([details](cluster-reload-soak.md)).", ""]
        rows = [[key, t["reloads"], t["ok"], t["failed"], t["runs_with_failures"], t["runs"]]
                for key, t in soak["totals"].items()]
        lines += [table(["policy and load", "reloads", "ok", "failed", "runs with failures", "runs"], rows), ""]

    fa = results.get("fairness")
    if fa:
        lines += ["## Fairness", "", f"`/cpu` at {fa['rate']:g} req/s, {fa['instances']} workers "
                  "([details](cluster-fairness.md)).", ""]
        rows = []
        for name, r in fa["servers"].items():
            if "per_worker" not in r:
                rows.append([name, r.get("skipped") or r.get("error"), None, None, None])
                continue
            rows.append([name, " / ".join(map(str, r["per_worker"].values())), r["max_min_ratio"],
                         r["latency"]["p50_ms"], r["latency"]["p99_ms"]])
        lines += [table(["server", "requests per worker", "max/min", "p50 ms", "p99 ms"], rows), ""]
        if images.get("fairness"):
            lines += [f"![requests per worker]({images['fairness']})", ""]
        lines += [f"- {'met' if g else 'NOT met'}: {t}" for t, g in fairness.verdict(fa)] + [""]

    me = results.get("memory")
    if me:
        lines += ["## Memory", "", "Idle after warm-up, MiB ([details](cluster-memory.md)).", ""]
        rows = []
        for name, sizes in me["servers"].items():
            if "skipped" in sizes:
                rows.append([name, "skipped: " + sizes["skipped"]] + [None] * 4)
                continue
            for n, e in sizes.items():
                if "error" in e:
                    rows.append([name, n, e["error"], None, None, None])
                else:
                    rows.append([name, n, e["master_rss"], e["worker_rss_median"], e["worker_uss_median"],
                                 e["tree_pss_sum"]])
        lines += [table(["server", "-i", "master RSS", "worker RSS", "worker USS", "tree PSS"], rows), ""]
        if images.get("memory"):
            lines += [f"![memory per server]({images['memory']})", ""]
        lines += [f"- {'met' if g else 'NOT met'}: {t}" for t, g in memory.verdict(me)] + [""]

    st = results.get("startup")
    if st:
        lines += ["## Start-up", "", "Seconds from the command ([details](cluster-startup.md)).", ""]
        rows = [[n, e.get("first_200_i2"), e.get("all_ready_i8"), e.get("ready_method") or e.get("skipped")]
                for n, e in st["servers"].items()]
        lines += [table(["server", "first 200 (-i 2)", "8 workers ready", "ready means"], rows), ""]

    tp = results.get("throughput")
    if tp and "servers" in tp:
        lines += ["## Throughput", "", f"wrk `GET /`, {tp['instances']} workers ([details](cluster-throughput.md)).",
                  ""]
        rows = []
        for n, r in tp["servers"].items():
            if "keepalive" in r:
                rows.append([n, r["keepalive"]["requests_per_s"], r["keepalive"]["p99_ms"],
                             r["close"]["requests_per_s"], r["close"]["p99_ms"]])
            else:
                rows.append([n, r.get("skipped") or r.get("error"), None, None, None])
        lines += [table(["server", "keep-alive req/s", "p99 ms", "connection per request req/s", "p99 ms"], rows),
                  ""]
        if images.get("throughput"):
            lines += [f"![throughput]({images['throughput']})", ""]
        lines += [f"- {'met' if g else 'NOT met'}: {t}" for t, g in throughput.verdict(tp)] + [""]

    rt = results.get("reload-time")
    if rt:
        lines += ["## Reload time", "", "Signal to last old worker gone; latency of requests ending during reloads "
                  "vs between them ([details](cluster-reload-time.md)).", ""]
        rows = []
        for n, r in rt["servers"].items():
            if "during" in r:
                rows.append([n, r["reload_seconds_median"], r["during"]["p99_ms"], r["between"]["p99_ms"],
                             r["during"]["max_ms"]])
            else:
                rows.append([n, r.get("skipped") or r.get("error"), None, None, None])
        lines += [table(["server", "reload s (median)", "p99 ms during", "p99 ms between", "max ms during"], rows),
                  ""]

    choice, reasons = policy_choice({k: v for k, v in results.items() if v})
    if reasons:
        lines += ["## Default balancing policy", "", f"These numbers favour **{choice}**:", "", *reasons, ""]
    return "\n".join(lines)
