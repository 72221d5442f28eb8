"""Scenario 3, memory: master and worker RSS/USS, and the whole tree, idle after a warm-up.

Each server is started at -i 2 and -i 8, warmed up with 400 requests (`/` and `/cpu`, new connections),
left idle for 1 s, then measured with psutil (memory_full_info: RSS, USS, PSS). The master of PM2 is
its daemon ("God") process; its workers are the Node processes it lists.
"""

from __future__ import annotations

import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import psutil

from benchmarks.harness import procs, servers
from benchmarks.harness.results import Context, machine_line, table, write_json, write_md
from benchmarks.harness.stats import median

NAME = "memory"
MIB = 1024 * 1024


def measure(proc: psutil.Process) -> dict[str, float]:
    info = proc.memory_full_info()
    return {"rss": info.rss / MIB, "uss": info.uss / MIB, "pss": info.pss / MIB}


def warm_up(port: int, count: int = 400) -> None:
    def one(i: int) -> None:
        procs.get(port, "/cpu" if i % 4 == 0 else "/", timeout=5)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def run(ctx: Context) -> dict:
    sizes = [2, 8]
    results: dict[str, dict] = {}
    for name in ctx.servers:
        results[name] = {}
        for n in sizes:
            ctx.log(f"{NAME}: {name} -i {n}")
            try:
                server = servers.make(name, n)
            except servers.Unavailable as exc:
                results[name] = {"skipped": str(exc)}
                break
            try:
                server.start()
                server.wait_ready(60)
                server.wait_serving(30)
                warm_up(server.port)
                time.sleep(1.0)
                master = measure(server.master())
                workers = [measure(p) for p in server.worker_procs()]
                others = []  # helpers in the tree that are neither master nor worker
                worker_pids = server.worker_pids()
                try:
                    for child in server.master().children(recursive=True):
                        if child.pid not in worker_pids:
                            others.append(measure(child))
                except psutil.Error:
                    pass
                tree = [master] + workers + others
                entry = {
                    "workers": len(workers),
                    "master_rss": round(master["rss"], 2),
                    "master_uss": round(master["uss"], 2),
                    "worker_rss_median": round(median([w["rss"] for w in workers]) or 0, 2),
                    "worker_uss_median": round(median([w["uss"] for w in workers]) or 0, 2),
                    "worker_pss_median": round(median([w["pss"] for w in workers]) or 0, 2),
                    "other_processes": len(others),
                    "tree_rss_sum": round(sum(p["rss"] for p in tree), 2),
                    "tree_uss_sum": round(sum(p["uss"] for p in tree), 2),
                    "tree_pss_sum": round(sum(p["pss"] for p in tree), 2),
                }
                results[name][str(n)] = entry
                ctx.log(f"  master RSS {entry['master_rss']} MiB, worker USS {entry['worker_uss_median']} MiB, "
                        f"tree PSS {entry['tree_pss_sum']} MiB")
            except Exception as exc:  # noqa: BLE001
                results[name][str(n)] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
            finally:
                server.stop()
    data = write_json(ctx, f"cluster-{NAME}", {"sizes": sizes, "servers": results})
    write_md(ctx, f"cluster-{NAME}", markdown(data))
    return data


def verdict(data: dict) -> list[tuple[str, bool]]:
    s = data["servers"]
    checks = []
    for name in ("prun-shared", "prun-leastconn"):
        for n, e in s.get(name, {}).items():
            if isinstance(e, dict) and "master_rss" in e:
                checks.append((f"{name} -i {n}: master RSS {e['master_rss']} MiB < 40 MiB", e["master_rss"] < 40))
                uv = s.get("uvicorn", {}).get(n, {})
                if "worker_uss_median" in uv:
                    checks.append((f"{name} -i {n}: worker USS {e['worker_uss_median']} MiB <= uvicorn's "
                                   f"{uv['worker_uss_median']} MiB", e["worker_uss_median"] <= uv["worker_uss_median"]))
    return checks


def markdown(data: dict) -> str:
    lines = [
        "# Memory",
        "",
        "Idle after a warm-up of 400 requests, in MiB (psutil `memory_full_info`). USS is memory only that "
        "process holds; PSS shares the pages it shares with others among them, so the tree's PSS sum is its "
        "real footprint (an RSS sum counts shared pages once per process). gunicorn workers share "
        "pages with their master (gunicorn forks without exec), while prun and uvicorn start each worker as a "
        "fresh interpreter, so their workers' USS carries the interpreter and the imports.",
        "",
        machine_line(data),
        "",
    ]
    header = ["server", "-i", "master RSS", "master USS", "worker RSS (median)", "worker USS (median)",
              "worker PSS (median)", "tree RSS sum", "tree USS sum", "tree PSS sum"]
    rows = []
    for name, sizes in data["servers"].items():
        if "skipped" in sizes:
            rows.append([name, "skipped: " + sizes["skipped"]] + [None] * (len(header) - 2))
            continue
        for n, e in sizes.items():
            if "error" in e:
                rows.append([name, n, e["error"]] + [None] * (len(header) - 3))
                continue
            rows.append([name, n, e["master_rss"], e["master_uss"], e["worker_rss_median"], e["worker_uss_median"],
                         e["worker_pss_median"], e["tree_rss_sum"], e["tree_uss_sum"], e["tree_pss_sum"]])
    lines.append(table(header, rows))
    lines += ["", "Targets:", ""]
    lines += [f"- {'met' if good else 'NOT met'}: {text}" for text, good in verdict(data)]
    return "\n".join(lines)
