"""WebSocket echo messages per second with 64 clients: prun beside uvicorn (its three implementations:
websockets, websockets-sansio, wsproto) and granian, one worker each.

    python -m benchmarks.ws_echo                     # 5 rounds of 5 s, 11-byte and 1 KiB messages
    python -m benchmarks.ws_echo --quick --allow-busy          # a smoke run (results/smoke/)
    python -m benchmarks.ws_echo --servers prun,granian --sizes 11 --rounds 7 --duration 10

Every server runs apps/ws_echo.py (accept, then send back each text or bytes message until the client
disconnects) with one worker, its whole tree pinned to CPU 0. The client (harness/ws_client.c, compiled
now) is pinned to CPU 1: 64 WebSockets, each sends one text message and waits for its echo before the
next (ping-pong); it checks every echo byte for byte and fails loudly on a close frame or a short read.
It offers no extension, so no permessage-deflate (and fails if a server negotiates one anyway).

Servers: prun (`--ws auto`: the websockets library's sans-I/O protocol), uvicorn --ws websockets (what
uvicorn's --ws auto picks: the websockets library's legacy asyncio layer), uvicorn --ws websockets-sansio
(the same sans-I/O protocol as prun), uvicorn --ws wsproto (all --http httptools --loop uvloop), granian
--interface asgi (its own Rust WebSocket). Round by round (A B C D A B C D ...), every figure as median (min-max), every ratio prun / peer
of the same round, the server's CPU time per message, and the client's own CPU use (near 100% of its CPU,
the figure is the client's ceiling). Results: results/ws-echo.json and .md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks.harness import machine, procs, servers, wsload
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

NAME = "ws-echo"
APP = servers.App("ws_echo:app")
CONNECTIONS = 64
SIZES = (11, 1024)
SERVER_CPUS, CLIENT_CPUS = "0", "1"
DEFAULT_SERVERS = servers.WS_SERVERS
# the targets: prun / peer at least this (prun / uvicorn 1.3x, prun / granian 1x)
TARGETS = {"uvicorn-websockets": 1.3, "uvicorn-wsproto": 1.3, "uvicorn-websockets-sansio": 1.3, "uvicorn": 1.3,
           "granian": 1.0}
KNOWN = ["prun", "prun-shared", "prun-leastconn", "prun-base", "uvicorn", "uvicorn-websockets", "uvicorn-wsproto",
         "uvicorn-websockets-sansio", "granian"]
BUSY_CPU = 30.0


def start_all(ctx: Context, names: list[str], binary: Path, warmup: float) -> dict[str, servers.Server]:
    """Every server started and warmed up by one short run of the client (which also checks the echo)."""
    running: dict[str, servers.Server] = {}
    for name in names:
        # prun --ws auto, granian --ws, uvicorn --ws auto unless its name picks the implementation
        server = servers.make(name, 1, app=APP, cpus=SERVER_CPUS, ws="auto")
        try:
            server.start()
            server.wait_serving(60)
            wsload.run(binary, server.port, seconds=warmup, connections=CONNECTIONS, size=SIZES[0], cpus=CLIENT_CPUS)
            running[name] = server
        except Exception as exc:  # noqa: BLE001 - the others are still measured
            ctx.log(f"  {name} could not serve the WebSocket echo: {exc}")
            server.stop()
    return running


def measure(ctx: Context, names: list[str], sizes: list[int], rounds: int, seconds: float, binary: Path) -> dict:
    entry: dict = {"load_before": machine.loadavg(), "cpu_busy_before": machine.wait_quiet(ctx.log, limit=ctx.quiet_limit)}
    running = start_all(ctx, names, binary, 1.0)
    runs: dict[int, dict[str, list[dict]]] = {size: {n: [] for n in running} for size in sizes}
    failures: list[str] = []
    try:
        entry["servers"] = {name: {"label": s.label, "command": s.command(), "affinity": machine.affinity(s.master_pid)}
                            for name, s in running.items()}
        entry["failed_to_start"] = [n for n in names if n not in running]
        for index in range(1, rounds + 1):
            for size in sizes:
                for name, server in running.items():  # A B C D, then A B C D again
                    try:
                        cpu = machine.tree_cpu_seconds(server.master_pid)
                        began = time.monotonic()
                        r = wsload.run(binary, server.port, seconds=seconds, connections=CONNECTIONS, size=size,
                                       cpus=CLIENT_CPUS)
                        wall = time.monotonic() - began
                        cpu = machine.tree_cpu_seconds(server.master_pid) - cpu
                    except Exception as exc:  # noqa: BLE001 - a failed round is reported, the rest goes on
                        ctx.log(f"  {name} {size} B round {index}: {exc}")
                        failures.append(f"{name}, {size} B, round {index}: {exc}")
                        continue
                    r["round"] = index
                    r["server_cpu_s"] = round(cpu, 3)
                    # over every echo the client received (those after the window too), as the CPU time covers them
                    r["cpu_us_per_message"] = round(cpu / r["total"] * 1e6, 2) if r["total"] else None
                    r["server_cpu_pct"] = round(cpu / wall * 100, 1) if wall else None
                    runs[size][name].append(r)
                    ctx.log(f"  round {index}/{rounds} {size:5} B {name:18} {r['messages_per_s']:10,.0f} msg/s "
                            f"{r['cpu_us_per_message'] or 0:7.1f} µs CPU/message, client CPU {r['client_cpu_pct']:.0f}%")
    finally:
        for server in running.values():
            server.stop()
    entry["load_after"] = machine.loadavg()
    entry["failures"] = failures
    entry["sizes"] = {}
    for size in sizes:
        by_name = runs[size]
        base = "prun" if "prun" in by_name else next((n for n in by_name if n.startswith("prun")), None)
        c = compare(by_name, "messages_per_s", base, "cpu_us_per_message")
        block = {"runs": by_name, "spread": c["spread"], "cpu_us_per_message": c["cpu_spread"], "ratios": c["ratios"],
                 "cpu_ratios": c["cpu_ratios"],
                 "client_cpu_pct": {n: spread([r["client_cpu_pct"] for r in rs]) for n, rs in by_name.items()},
                 "server_cpu_pct": {n: spread([r["server_cpu_pct"] for r in rs if r.get("server_cpu_pct")])
                                    for n, rs in by_name.items()},
                 "notes": []}
        for name, rs in by_name.items():
            note = client_limit_note(name, [r["client_cpu_pct"] for r in rs], 100.0, "the client")
            if note:
                block["notes"].append(note)
        block["notes"] += c["notes"]
        entry["sizes"][str(size)] = block
    return entry


def target_lines(data: dict) -> list[str]:
    """The issue's targets, each against the measured ratio and whether its rounds show it."""
    lines = []
    for size, block in data["result"].get("sizes", {}).items():
        for peer, goal in TARGETS.items():
            r = block["ratios"].get(peer)
            if not r or r.get("median") is None:
                continue
            if r["min"] >= goal:
                verdict = "met in every round"
            elif r["max"] < goal:
                verdict = "not met in any round"
            else:
                verdict = "met in some rounds only"
            lines.append(f"- {size} B: prun / {peer} {fmt_ratio(r)}, target >= {goal:g}x: {verdict}")
    return lines


def markdown(data: dict) -> str:
    result = data["result"]
    out = ["# prun WebSocket echo benchmark", "", machine_line(data), "",
           f"{data['connections']} WebSockets, ping-pong (each sends one text message and waits for its echo), "
           f"{data['seconds']:g} s per run, {data['rounds']} rounds; every server loaded once per round and message "
           "size, in the same order. One worker each, the server's whole tree pinned to CPU 0; the client "
           "(`benchmarks/harness/ws_client.c`, C, epoll, one thread) pinned to CPU 1. No extension offered, so no "
           "permessage-deflate. Each cell: messages echoed per second, median (min-max over the rounds); ratios: "
           "prun / peer of the same round, median (min-max).", ""]
    out += [f"- {name}: `{s['label']}`" for name, s in result.get("servers", {}).items()]
    versions = data["machine"]["versions"]
    out += ["", f"websockets {versions.get('websockets')}, wsproto {versions.get('wsproto')}.", ""]
    sizes = result.get("sizes", {})
    names = list(result.get("servers", {}))
    if not sizes or not names:
        return "\n".join(out + ["No server could be measured.", ""])
    base = "prun" if "prun" in names else names[0]
    peers = [n for n in names if n != base]
    rows, cpu_rows, load_rows = [], [], []
    notes: list[str] = []
    for size, block in sizes.items():
        rows.append([f"{size} B"] + [fmt_spread(block["spread"].get(n)) for n in names]
                    + [fmt_ratio(block["ratios"].get(p)) for p in peers])
        cpu_rows.append([f"{size} B"] + [fmt_spread(block["cpu_us_per_message"].get(n), 1) for n in names]
                        + [fmt_ratio(block["cpu_ratios"].get(p)) for p in peers])
        load_rows.append([f"{size} B"] + [f"{fmt_spread(block['server_cpu_pct'].get(n))} / "
                                          f"{fmt_spread(block['client_cpu_pct'].get(n))}" for n in names])
        notes += [f"{size} B: {note}" for note in block["notes"]]
    out += ["## Messages per second", "",
            table(["message"] + names + [f"{base} / {p}" for p in peers], rows), "",
            "## Server CPU time per message", "",
            "µs, every process of the server's tree (user + system), over every echo of the run; median (min-max), "
            "and the peer's over prun's, round by round (less disturbed by other load than messages per second).", "",
            table(["message"] + names + [f"{p} / {base} CPU" for p in peers], cpu_rows), "",
            "## CPU use: server / client", "",
            "Percent of one CPU over each run, median (min-max): the server's tree (CPU 0), then the client "
            "(CPU 1). A server near 100% is the limit, as it should be; a client near 100% would be the limit "
            "instead (then a note below says so).", "",
            table(["message"] + names, load_rows), ""]
    targets = target_lines(data)
    if targets:
        out += ["## Targets (issue 13)", ""] + targets + [""]
    if result.get("failed_to_start"):
        notes.append(f"could not start: {', '.join(result['failed_to_start'])}")
    notes += [f"failed: {f}" for f in result.get("failures", [])]
    if notes:
        out += ["Notes (a ratio whose spread note is here is not a measured difference):", ""]
        out += [f"- {note}" for note in notes] + [""]
    if (result.get("cpu_busy_before") or 0) >= BUSY_CPU:
        out += [f"**Other work used {result['cpu_busy_before']:.0f}% of the CPUs before the run, with every server "
                "stopped**: the figures are suspect.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ws_echo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"default {','.join(DEFAULT_SERVERS)}; also uvicorn (--ws auto), prun-shared")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="text message sizes in bytes, 1 to 65535 (default 11,1024)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, --quick 2)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 5, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: short rounds, results in results/smoke/")
    parser.add_argument("--allow-busy", action="store_true",
                        help="measure even when the load average is high (results go to results/busy/)")
    parser.add_argument("--out", default=str(RESULTS), help="the results directory")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in KNOWN]
    if unknown:
        parser.error(f"unknown server: {', '.join(unknown)} (choose from {', '.join(KNOWN)})")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: not a list of byte counts: {args.sizes!r}")
    if not sizes or any(not 1 <= s <= 65535 for s in sizes):
        parser.error("--sizes: every size must be 1 to 65535 bytes")
    missing = [tool for tool in ("taskset",) if not shutil.which(tool)]
    if wsload.compiler() is None:
        missing.append("a C compiler (gcc)")
    if missing:
        print(f"benchmarks.ws_echo: missing {', '.join(missing)} (apt-get install gcc util-linux)", file=sys.stderr)
        return 1
    if (os.cpu_count() or 1) < 2:
        print("benchmarks.ws_echo: needs 2 CPUs (the server on one, the client on the other)", file=sys.stderr)
        return 1
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = float(args.duration or (1 if args.quick else 5))
    ctx = Context(quick=args.quick, results=Path(args.out), allow_busy=args.allow_busy, rounds=rounds)
    if not begin(ctx):
        return 2
    began = time.monotonic()
    try:
        binary = wsload.build(ctx.tmp)
        ctx.log(f"ws echo: {', '.join(chosen)}; sizes {', '.join(map(str, sizes))} B; {rounds} rounds of {seconds:g} s")
        result = measure(ctx, chosen, sizes, rounds, seconds, binary)
    except KeyboardInterrupt:
        ctx.log("interrupted: stopping every process started")
        return 130
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        print(f"benchmarks.ws_echo: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.REGISTRY.cleanup()
        ctx.remove_tmp()
    data = write_json(ctx, NAME, {"connections": CONNECTIONS, "seconds": seconds, "rounds": rounds, "sizes": sizes,
                                  "client": "benchmarks/harness/ws_client.c", "permessage_deflate": "not offered",
                                  "result": result})
    report = markdown(data)
    write_md(ctx, NAME, report)
    print("\n" + report)
    ctx.log(f"done in {time.monotonic() - began:.0f}s")
    failed = result.get("failures") or result.get("failed_to_start")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
