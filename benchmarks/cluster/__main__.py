"""python -m benchmarks.cluster [scenario ...] [--quick] [--servers a,b] [--reloads N]

Scenarios (all by default, in this order): reload-loss, fairness, memory, startup, throughput,
reload-time, then plots (which also writes cluster-summary.md from every cluster-*.json present).
reload-soak (prun's policies only, the reload-loss runs repeated --rounds times) runs only when named.
Results go to benchmarks/results/cluster-*.json, cluster-*.md and cluster-*.png (a --quick run, a smoke
run, writes to benchmarks/results/smoke/; a run on a busy machine is refused unless --allow-busy).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from benchmarks.harness import procs, servers
from benchmarks.harness.results import RESULTS, Context, begin

SCENARIOS = {
    "reload-loss": "reload_loss",
    "fairness": "fairness",
    "memory": "memory",
    "startup": "startup",
    "throughput": "throughput",
    "reload-time": "reload_time",
    "plots": "plots",
}
OPT_IN = {"reload-soak": "reload_soak"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=", ".join([*SCENARIOS, *OPT_IN]))
    parser.add_argument("--quick", action="store_true", help="fewer reloads and shorter runs")
    parser.add_argument("--servers", default=",".join(servers.SERVERS),
                        help=f"comma-separated, from {','.join(servers.SERVERS)} (default: all)")
    parser.add_argument("--reloads", type=int, help="reloads per run in reload-loss (default 20, --quick 5)")
    parser.add_argument("--rounds", type=int, help="rounds of reload-soak (default 3, --quick 1)")
    parser.add_argument("--results", default=str(RESULTS), help="where result files go")
    parser.add_argument("--allow-busy", action="store_true",
                        help="measure even when the load average is high (results go to results/busy/)")
    args = parser.parse_args(argv)
    chosen = args.scenarios or list(SCENARIOS)
    modules = {**SCENARIOS, **OPT_IN}
    unknown = [s for s in chosen if s not in modules]
    names = [s for s in args.servers.split(",") if s]
    bad = [s for s in names if s not in servers.SERVERS]
    if unknown or bad:
        parser.error(f"unknown scenario or server: {', '.join(unknown + bad)}")
    from pathlib import Path

    ctx = Context(quick=args.quick, servers=names, results=Path(args.results), reloads=args.reloads,
                  rounds=args.rounds, allow_busy=args.allow_busy)
    if not begin(ctx):
        return 2
    began = time.monotonic()
    failed = []
    try:
        for name in chosen:
            module = importlib.import_module(f"benchmarks.cluster.{modules[name]}")
            ctx.log(f"== {name}")
            try:
                module.run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - the other scenarios still run
                import traceback

                traceback.print_exc()
                failed.append(f"{name}: {exc}")
    except KeyboardInterrupt:
        ctx.log("interrupted: stopping every process started")
        return 130
    finally:
        procs.REGISTRY.cleanup()
        ctx.remove_tmp()
        ctx.log(f"done in {time.monotonic() - began:.0f}s")
    for line in failed:
        print(f"scenario failed: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
