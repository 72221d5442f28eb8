"""prun's HTTP server side by side with uvicorn, gunicorn and granian, app shape by app shape, loaded with wrk.

    pip install -e '.[bench]'        # the peer servers, FastAPI and Flask
    python -m benchmarks             # every scenario and shape; results in benchmarks/results/http.*
    python -m benchmarks --quick     # a smoke run (1 s per round, 2 rounds): results/smoke/
    python -m benchmarks --scenarios pinned --shapes hello,fastapi --rounds 5 --duration 5
    python -m benchmarks --tls       # HTTPS keep-alive (also python -m benchmarks.https): results/https.*

Scenarios:
    pinned    one worker; the server's whole tree (master included) pinned to CPU 0, wrk -t1 pinned to CPU 1
    unpinned  two workers (-i 2, --workers 2, -w 2), wrk -t2, nothing pinned
    reload    20 HUPs to the prun master (-i 2) during 30 s of wrk keep-alive load: socket errors and non-2xx

With --tls every server serves HTTPS with a P-256 certificate made at run time (harness/tls.py) and wrk
loads https://; the defaults are then the pinned and unpinned scenarios, the hello_cl shape, keep-alive only,
prun's two policies, uvicorn and granian.

Shapes (benchmarks/apps): hello, hello_cl (explicit content-length), lifespan, body16k, json (ASGI, by hand),
fastapi (a FastAPI JSON endpoint), flask (a Flask JSON endpoint, WSGI). ASGI shapes run on prun, uvicorn,
gunicorn (uvicorn worker) and granian; the WSGI one on prun, gunicorn gthread and granian's WSGI. Each shape
is loaded keep-alive and with a new connection per request (`Connection: close`).

All servers of a shape are started first, then loaded in turn, round by round (A B C A B C ...), so the
noise of a shared machine hits them alike. Every figure is reported with its min, median and max over the
rounds; every ratio prun / peer with the min and max of the ratios of the same rounds, and a note when the
spread is wider than the difference. A run on a busy machine is refused (see harness/results.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from benchmarks.harness import machine, procs, servers, wrk
from benchmarks.harness.results import (
    RESULTS,
    Context,
    begin,
    fmt_ratio,
    fmt_spread,
    machine_line,
    table,
    write_json,
    write_md,
)
from benchmarks.harness.stats import client_limit_note, compare, spread
from benchmarks.harness.tls import Certificate, make_certificate, negotiated

NAME = "http"
TLS_NAME = "https"
CONNECTIONS = 64
SHAPES: dict[str, servers.App] = {
    "hello": servers.App("shapes:hello"),
    "hello_cl": servers.App("shapes:hello_cl"),
    "lifespan": servers.App("shapes:lifespan"),
    "body16k": servers.App("shapes:body16k"),
    "json": servers.App("shapes:json"),
    "fastapi": servers.App("fastapi_json:app", needs="fastapi"),
    "flask": servers.App("flask_json:app", "wsgi", needs="flask"),
    "hello_lists": servers.App("shapes:hello_lists"),  # only when named: prun's head cache off
}
DEFAULT_SHAPES = [s for s in SHAPES if s != "hello_lists"]
CONNECTION_MODES = ("keepalive", "close")
BUSY_CPU = 30.0  # % of all CPUs in use before a shape, every server stopped: other work is running
# how each throughput scenario runs: workers, the server's CPUs, wrk's threads and CPUs
MODES = {
    "pinned": {"instances": 1, "cpus": "0", "wrk_threads": 1, "wrk_cpus": "1",
               "description": "One worker; the server's whole tree (its master too) pinned to CPU 0 with taskset, "
                              "wrk -t1 pinned to CPU 1."},
    "unpinned": {"instances": 2, "cpus": None, "wrk_threads": 2, "wrk_cpus": None,
                 "description": "Two workers (-i 2 / --workers 2 / -w 2), wrk -t2, nothing pinned: servers and "
                                "wrk share both CPUs."},
}


def peers_for(app: servers.App, chosen: list[str]) -> list[str]:
    """The servers (from `chosen`) that run an app of this interface, prun first."""
    allowed = servers.WSGI_SERVERS if app.interface == "wsgi" else servers.ASGI_SERVERS
    extra = ["prun-shared", "prun-leastconn", "prun-base"]  # prun with an explicit policy, or another install
    names = [n for n in chosen if n in allowed or n in extra]
    return sorted(names, key=lambda n: (not n.startswith("prun"), n != "prun"))


def start_all(ctx: Context, names: list[str], app: servers.App, mode: dict, warmup: float,
              tls: Certificate | None = None) -> dict[str, servers.Server]:
    running: dict[str, servers.Server] = {}
    for name in names:
        try:
            server = servers.make(name, mode["instances"], app=app, cpus=mode["cpus"], tls=tls)
        except servers.Unavailable as exc:
            ctx.log(f"  {name}: {exc}")
            continue
        try:
            server.start()
            server.wait_serving(60)
            wrk.run(server.port, seconds=warmup, threads=mode["wrk_threads"], connections=CONNECTIONS,
                    cpus=mode["wrk_cpus"], tls=tls is not None)
            running[name] = server
        except Exception as exc:  # noqa: BLE001 - the others are still measured
            ctx.log(f"  {name} could not serve {app.target}: {exc}")
            server.stop()
    return running


def client_capacity(mode: dict) -> float:
    """The CPU wrk may use in a mode, in percent (100 per CPU): its pinned CPUs, else one per thread."""
    cpus = mode["wrk_cpus"]
    return 100.0 * (len(cpus.split(",")) if cpus is not None else mode["wrk_threads"])


def throughput(ctx: Context, mode_name: str, shape: str, chosen: list[str], rounds: int, seconds: float,
               connections: list[str], tls: Certificate | None = None) -> dict:
    """One shape in one mode: every server started, then `rounds` interleaved rounds per connection mode."""
    mode = MODES[mode_name]
    app = SHAPES[shape]
    names = peers_for(app, chosen)
    if app.missing():
        ctx.log(f"{mode_name} / {shape}: skipped: {app.missing()}")
        return {"shape": shape, "app": app.target, "interface": app.interface, "skipped": app.missing()}
    ctx.log(f"{mode_name} / {shape}: {', '.join(names)}")
    entry: dict = {"shape": shape, "app": app.target, "interface": app.interface, "load_before": machine.loadavg(),
                   "cpu_busy_before": machine.wait_quiet(ctx.log, limit=ctx.quiet_limit)}
    running = start_all(ctx, names, app, mode, 1.0, tls)
    try:
        entry["servers"] = {name: {"label": s.label, "command": s.command(), "affinity": machine.affinity(s.master_pid),
                                   **({"balance": s.balance} if isinstance(s, servers.Prun) else {}),
                                   **({"tls": negotiated(s.port, tls)} if tls else {})}
                            for name, s in running.items()}
        entry["failed_to_start"] = [n for n in names if n not in running]
        runs: dict[str, dict[str, list[dict]]] = {c: {n: [] for n in running} for c in connections}
        for index in range(1, rounds + 1):
            for conn in connections:
                for name, server in running.items():  # A B C, then A B C again
                    try:
                        cpu = machine.tree_cpu_seconds(server.master_pid)
                        r = wrk.run(server.port, seconds=seconds, threads=mode["wrk_threads"],
                                    connections=CONNECTIONS, cpus=mode["wrk_cpus"], close=conn == "close",
                                    tls=tls is not None)
                        cpu = machine.tree_cpu_seconds(server.master_pid) - cpu
                    except Exception as exc:  # noqa: BLE001
                        ctx.log(f"  {name} {conn} round {index}: {exc}")
                        continue
                    r["round"] = index
                    r["server_cpu_s"] = round(cpu, 3)
                    r["cpu_us_per_request"] = round(cpu / r["requests"] * 1e6, 2) if r.get("requests") else None
                    runs[conn][name].append(r)
                    bad = sum(r["socket_errors"].values()) + r["non2xx"]
                    ctx.log(f"  round {index}/{rounds} {conn:9} {name:16} {r['requests_per_s']:10,.0f} req/s "
                            f"{r['cpu_us_per_request'] or 0:7.1f} µs CPU/request" + (f"  ({bad} errors)" if bad else ""))
    finally:
        for server in running.values():
            server.stop()
    entry["load_after"] = machine.loadavg()
    entry["connections"] = {}
    for conn in connections:
        prun = "prun" if "prun" in runs[conn] else next((n for n in runs[conn] if n.startswith("prun")), None)
        c = compare(runs[conn], "requests_per_s", prun, "cpu_us_per_request")
        block: dict = {"runs": runs[conn], "spread": c["spread"], "cpu_us_per_request": c["cpu_spread"],
                       "ratios": c["ratios"], "cpu_ratios": c["cpu_ratios"], "notes": [], "errors": {},
                       "client_cpu_pct": {n: spread([r["client_cpu_pct"] for r in rs]) for n, rs in runs[conn].items()}}
        for name, rs in runs[conn].items():
            errors = sum(sum(r["socket_errors"].values()) for r in rs)
            non2xx = sum(r["non2xx"] for r in rs)
            if errors or non2xx:
                block["errors"][name] = {"socket_errors": errors, "non2xx": non2xx}
                if non2xx:
                    block["notes"].append(f"{name}: {non2xx} non-2xx replies: its figure is not comparable")
            note = client_limit_note(name, [r["client_cpu_pct"] for r in rs], client_capacity(mode), "wrk")
            if note:
                block["notes"].append(note)
        block["notes"] += c["notes"]
        entry["connections"][conn] = block
    return entry


def reload_under_load(ctx: Context, hups: int, seconds: float, tls: Certificate | None = None) -> dict:
    """HUPs to the prun master while wrk keeps every connection busy: nothing may fail."""
    server = servers.make("prun", 2, app=SHAPES["hello"], tls=tls)
    result: list[dict] = []
    try:
        server.start()
        server.wait_ready(60)
        server.wait_serving(30)
        assert server.out is not None
        mark = server.out.mark()
        load = threading.Thread(target=lambda: result.append(
            wrk.run(server.port, seconds=seconds, threads=2, connections=CONNECTIONS, tls=tls is not None)),
            daemon=True)
        load.start()
        time.sleep(1.0)
        interval = (seconds - 3.0) / hups
        for _ in range(hups):
            os.kill(server.master_pid, signal.SIGHUP)
            time.sleep(interval)
        load.join(seconds + 60)
        time.sleep(0.5)
        completed = server.out.count(r"reload complete", mark)
        failed = server.out.count(r"reload failed", mark)
    finally:
        server.stop()
    if not result:
        raise RuntimeError("wrk gave no result during the reload scenario")
    run = result[0]
    ctx.log(f"reload: {run['requests_per_s']:,.0f} req/s, {completed} reloads, socket errors "
            f"{sum(run['socket_errors'].values())}, non-2xx {run['non2xx']}")
    return {"hups": hups, "seconds": seconds, "reloads_completed": completed, "reloads_failed": failed,
            "balance": getattr(server, "balance", None), **run}


def cell(block: dict, name: str) -> str | None:
    return fmt_spread(block["spread"].get(name))


def ratio_cell(block: dict, name: str, key: str = "ratios") -> str | None:
    return fmt_ratio(block.get(key, {}).get(name))


def tls_line(data: dict) -> list[str]:
    """What each server negotiated with a default client (an HTTPS run), one line."""
    if not data.get("tls"):
        return []
    seen: dict[str, str] = {}
    for shapes in data["scenarios"].values():
        for e in shapes if isinstance(shapes, list) else []:
            for name, s in e.get("servers", {}).items():
                t = s.get("tls") or {}
                seen.setdefault(name, f"{t.get('version')} {t.get('cipher')}, ALPN {t.get('alpn')}")
    what = "; ".join(f"{name}: {text}" for name, text in seen.items())
    return [f"HTTPS: a P-256 (ECDSA) certificate made at run time; wrk (OpenSSL) loads https://. Negotiated with "
            f"a Python client: {what or '-'}.", ""]


def markdown(data: dict) -> str:
    out = [f"# prun {'HTTPS' if data.get('tls') else 'HTTP'} benchmark", "", machine_line(data), "", *tls_line(data),
           f"wrk, {data['connections']} connections, {data['seconds']:g} s per run, {data['rounds']} rounds; every "
           "server of a shape is loaded once per round, in the same order (A B C A B C ...). Each cell: the median "
           "req/s (min-max over the rounds). Ratios: prun / peer of the same round, median (min-max). prun runs "
           f"with `--balance {data['machine']['prun_default_balance']}` (its default) unless its name says "
           "otherwise.", ""]
    for mode_name, shapes in data["scenarios"].items():
        if mode_name == "reload":
            r = shapes
            out += ["## reload", "", f"prun -i 2 (`--balance {r['balance']}`) under wrk -t2 -c{data['connections']} "
                    f"for {r['seconds']:g} s while the master gets {r['hups']} HUPs. Target: zero errors.", "",
                    f"- {r['hups']} HUPs sent, {r['reloads_completed']} reloads completed, {r['reloads_failed']} "
                    "failed (a HUP during a reload is queued, so a few may merge)",
                    f"- socket errors: {sum(r['socket_errors'].values())}, non-2xx responses: {r['non2xx']}",
                    f"- throughput during reloads: {r['requests_per_s']:,.0f} req/s", ""]
            continue
        out += [f"## {mode_name}", "", MODES[mode_name]["description"], ""]
        notes: list[str] = [f"{e['shape']}: skipped: {e['skipped']}" for e in shapes if e.get("skipped")]
        for interface in ("asgi", "wsgi"):
            entries = [e for e in shapes if e.get("interface") == interface and e.get("connections")]
            if not entries:
                continue
            names: list[str] = []
            for e in entries:
                names += [n for n in e["servers"] if n not in names]
            prun = "prun" if "prun" in names else names[0]
            peers = [n for n in names if n != prun]
            header = ["shape", "connection"] + names + [f"{prun} / {p}" for p in peers]
            rows, cpu_rows = [], []
            for e in entries:
                for conn, block in e["connections"].items():
                    rows.append([e["shape"], conn] + [cell(block, n) for n in names]
                                + [ratio_cell(block, p) for p in peers])
                    cpu_rows.append([e["shape"], conn] + [fmt_spread(block.get("cpu_us_per_request", {}).get(n), 1)
                                                          for n in names]
                                    + [ratio_cell(block, p, "cpu_ratios") for p in peers])
                    notes += [f"{e['shape']}, {conn}: {note}" for note in block["notes"]]
                if e.get("failed_to_start"):
                    notes.append(f"{e['shape']}: could not start {', '.join(e['failed_to_start'])}")
            out += [table(header, rows), "",
                    "Server CPU time per request, µs (every process of the server's tree, user + system; "
                    "median (min-max)), and the peer's over prun's, round by round: less disturbed by other "
                    "load than req/s, and with one CPU-bound worker it is what bounds req/s.", "",
                    table(["shape", "connection"] + names + [f"{p} / {prun} CPU" for p in peers], cpu_rows), ""]
        if notes:
            out += ["Spread notes (a ratio whose note is here is not a measured difference):", ""]
            out += [f"- {note}" for note in notes] + [""]
        loads = [e["load_before"][0] for e in shapes if e.get("load_before")]
        if loads:
            out += [f"Load average (1 min) before each shape: {', '.join(f'{x:.2f}' for x in loads)} (the "
                    "previous shape's own load decays into it).", ""]
        busy = [f"{e['shape']} ({e['cpu_busy_before']:.0f}%)" for e in shapes
                if (e.get("cpu_busy_before") or 0) >= BUSY_CPU]
        if busy:
            out += [f"**Other work used the CPUs before these shapes, with every server stopped**: "
                    f"{', '.join(busy)}: their figures are suspect.", ""]
    return "\n".join(out)


def plot(ctx: Context, data: dict, result_name: str = NAME) -> str | None:
    """Bars of the keep-alive medians per shape and server, with min-max whiskers (one panel per scenario)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    modes = [m for m in data["scenarios"] if m in MODES and data["scenarios"][m]]
    if not modes:
        return None
    fig, axes = plt.subplots(len(modes), 1, figsize=(10, 3.6 * len(modes)), squeeze=False)
    for ax, mode_name in zip(axes[:, 0], modes):
        entries = [e for e in data["scenarios"][mode_name] if "keepalive" in e.get("connections", {})]
        names: list[str] = []
        for e in entries:
            names += [n for n in e["servers"] if n not in names]
        colors = {name: f"C{j}" for j, name in enumerate(names)}
        labelled: set[str] = set()
        for i, e in enumerate(entries):
            shown = [n for n in e["servers"] if e["connections"]["keepalive"]["spread"].get(n, {}).get("median")]
            width = 0.8 / max(1, len(shown))
            for j, name in enumerate(shown):
                s = e["connections"]["keepalive"]["spread"][name]
                ax.bar(i - 0.4 + width * (j + 0.5), s["median"], width * 0.9, color=colors[name],
                       yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=2,
                       label=None if name in labelled else name)
                labelled.add(name)
        ax.set_xticks(range(len(entries)), [e["shape"] for e in entries])
        ax.set_ylabel("req/s (keep-alive)")
        ax.set_title(f"{mode_name}: median of {data['rounds']} rounds, whiskers min-max", fontsize=10)
        if names:
            ax.legend(fontsize=8, ncol=len(names))
    fig.tight_layout()
    path = ctx.out_dir / f"{result_name}.png"
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", help="pinned, unpinned, reload (default: all; --tls: pinned,unpinned)")
    parser.add_argument("--shapes", help=f"{','.join(DEFAULT_SHAPES)} (default: all; --tls: hello_cl), and hello_lists")
    parser.add_argument("--connections", help="keepalive, close (default: both; --tls: keepalive)")
    parser.add_argument("--servers", help="default: prun,uvicorn,gunicorn,granian,gunicorn-gthread,granian-wsgi "
                        "(--tls: prun,prun-shared,uvicorn,granian); also prun-shared, prun-leastconn (prun with "
                        "that --balance)")
    parser.add_argument("--tls", action="store_true",
                        help="serve and load HTTPS (a certificate made at run time); results in https.*")
    parser.add_argument("--rounds", type=int, help="rounds per shape (default 5, --quick 2)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (whole seconds; default 5, --quick 1)")
    parser.add_argument("--hups", type=int, help="HUPs in the reload scenario (default 20, --quick 5)")
    parser.add_argument("--reload-seconds", type=float, help="length of the reload scenario (default 30, --quick 8)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: short rounds, results in results/smoke/")
    parser.add_argument("--allow-busy", action="store_true",
                        help="measure even when the load average is high (results go to results/busy/)")
    parser.add_argument("--out", default=str(RESULTS), help="the results directory")
    args = parser.parse_args(argv)
    defaults = ({"scenarios": "pinned,unpinned", "shapes": "hello_cl", "connections": "keepalive",
                 "servers": "prun,prun-shared,uvicorn,granian"} if args.tls else
                {"scenarios": "pinned,unpinned,reload", "shapes": ",".join(DEFAULT_SHAPES),
                 "connections": ",".join(CONNECTION_MODES),
                 "servers": "prun,uvicorn,gunicorn,granian,gunicorn-gthread,granian-wsgi"})

    def listed(option: str) -> list[str]:
        return [s.strip() for s in (getattr(args, option) or defaults[option]).split(",") if s.strip()]

    names, shapes, conns, chosen = listed("scenarios"), listed("shapes"), listed("connections"), listed("servers")
    name = TLS_NAME if args.tls else NAME
    known = set(servers.ASGI_SERVERS) | set(servers.WSGI_SERVERS) | {"prun-shared", "prun-leastconn", "prun-base"}
    unknown = ([n for n in names if n not in (*MODES, "reload")] + [s for s in shapes if s not in SHAPES]
               + [c for c in conns if c not in CONNECTION_MODES] + [s for s in chosen if s not in known])
    if unknown:
        parser.error(f"unknown scenario, shape, connection mode or server: {', '.join(unknown)}")
    missing = wrk.missing_tools()
    if missing:
        print(f"benchmarks: missing {', '.join(missing)} (apt-get install wrk util-linux)", file=sys.stderr)
        return 1
    if "pinned" in names and (os.cpu_count() or 1) < 2:
        print("benchmarks: the pinned scenario needs 2 CPUs", file=sys.stderr)
        return 1
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = float(args.duration or (1 if args.quick else 5))
    hups = args.hups or (5 if args.quick else 20)
    reload_seconds = args.reload_seconds or (8.0 if args.quick else 30.0)
    ctx = Context(quick=args.quick, results=Path(args.out), allow_busy=args.allow_busy, rounds=rounds)
    if not begin(ctx):
        return 2
    scenarios: dict[str, object] = {}
    began = time.monotonic()
    failed = []
    try:
        tls = make_certificate(ctx.tmp / "tls") if args.tls else None
        for mode_name in (n for n in names if n in MODES):
            scenarios[mode_name] = entries = []
            for shape in shapes:
                try:
                    entries.append(throughput(ctx, mode_name, shape, chosen, rounds, seconds, conns, tls))
                except Exception as exc:  # noqa: BLE001 - the other shapes still run
                    traceback.print_exc()
                    failed.append(f"{mode_name} / {shape}: {exc}")
        if "reload" in names:
            try:
                scenarios["reload"] = reload_under_load(ctx, hups, reload_seconds, tls)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                failed.append(f"reload: {exc}")
    except KeyboardInterrupt:
        ctx.log("interrupted: stopping every process started")
        return 130
    finally:
        procs.REGISTRY.cleanup()
        ctx.remove_tmp()
    data = write_json(ctx, name, {"connections": CONNECTIONS, "seconds": seconds, "rounds": rounds, "tls": args.tls,
                                  "scenarios": scenarios, "failed": failed})
    image = plot(ctx, data, name)
    report = markdown(data) + (f"\n![keep-alive throughput by shape]({image})\n" if image else "")
    write_md(ctx, name, report)
    print("\n" + report)
    ctx.log(f"done in {time.monotonic() - began:.0f}s")
    for line in failed:
        print(f"benchmarks: failed: {line}", file=sys.stderr)
    return 1 if failed else 0
