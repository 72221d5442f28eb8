"""The run context every scenario gets, and result files: `benchmarks/results/NAME.json` and `NAME.md`,
each with the machine's description (CPU model, load average, prun's balance, versions).

A `--quick` run is a smoke run: its files go to `benchmarks/results/smoke/` (not committed) and say so
in their first line. A run on a busy machine (load average above machine.MAX_LOAD when it starts) is
refused unless `--allow-busy` is given; its files then go to `benchmarks/results/busy/`, labelled.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import machine, procs

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Context:
    quick: bool = False
    servers: list[str] = field(default_factory=list)
    results: Path = RESULTS
    reloads: int | None = None
    rounds: int | None = None
    allow_busy: bool = False
    busy: str | None = None  # why the machine was busy when the run began (then allow_busy was given)
    load_at_start: list[float] = field(default_factory=machine.loadavg)
    _tmp: Path | None = None

    @property
    def tmp(self) -> Path:
        """A directory for the run's scratch files (made on first use; the entry point removes it)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="prun-bench-"))
        return self._tmp

    def remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    @property
    def quiet_limit(self) -> float:
        """Seconds a scenario waits for idle CPUs before measuring anyway."""
        return 10.0 if self.quick or self.busy else 90.0

    @property
    def label(self) -> str | None:
        """What the results of this run are, when not a measurement for the record."""
        if self.quick:
            return "smoke run (--quick): checks that the harness works, not a measurement"
        if self.busy:
            return f"taken on a busy machine ({self.busy}): not a measurement for the record"
        return None

    @property
    def out_dir(self) -> Path:
        if self.quick:
            return self.results / "smoke"
        if self.busy:
            return self.results / "busy"
        return self.results


def gate(ctx: Context) -> str | None:
    """Check the machine before a run: None to go on, or the one line to end the run with."""
    reason = machine.busy_reason(ctx.load_at_start)
    if reason is None:
        return None
    ctx.busy = reason
    if ctx.quick or ctx.allow_busy:
        ctx.log(f"the machine is busy ({reason}): results are labelled and kept out of benchmarks/results/")
        return None
    return (f"benchmarks: the machine is busy ({reason}, as `uptime` shows): figures taken now would not "
            f"be comparable. Wait for a quiet machine, or pass --allow-busy (results go to results/busy/) "
            f"or --quick (a smoke run).")


def begin(ctx: Context) -> bool:
    """Start a run: every process it starts is killed on SIGTERM and SIGHUP too, and the busy-machine gate
    is checked. False (its one line printed on stderr): the run must end, with exit code 2."""
    procs.stop_on_signals()
    refused = gate(ctx)
    if refused:
        print(refused, file=sys.stderr)
    return refused is None


def write_json(ctx: Context, name: str, data: dict) -> dict:
    """Write NAME.json (with the machine's description and the run's label); the data as written."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / f"{name}.json"
    data = {"scenario": name, "quick": ctx.quick, "label": ctx.label, "load_at_start": ctx.load_at_start,
            "machine": machine.describe(), **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    ctx.log(f"wrote {path}")
    return data


def write_md(ctx: Context, name: str, text: str) -> Path:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / f"{name}.md"
    if ctx.label:
        lines = text.rstrip().split("\n")
        text = "\n".join(lines[:1] + ["", f"**{ctx.label.upper()[:1]}{ctx.label[1:]}.**"] + lines[1:])
    path.write_text(text.rstrip() + "\n")
    ctx.log(f"wrote {path}")
    return path


def table(header: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_spread(s: dict | None, digits: int = 0) -> str | None:
    """A spread (stats.spread) as `median (min-max)`; None when it has no values."""
    if not s or s.get("median") is None:
        return None
    if s["n"] == 1:
        return f"{s['median']:,.{digits}f} (1 round)"
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def fmt_ratio(r: dict | None) -> str | None:
    """A ratio spread (stats.ratio_spread) as `median x (min-max)`; None when it has no values."""
    if not r or r.get("median") is None:
        return None
    if r["n"] == 1:
        return f"{r['median']:.2f}x (1 round)"
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def machine_line(data: dict) -> str:
    m = data["machine"]
    v = m["versions"]
    peers = ", ".join(f"{k} {v[k]}" for k in ("prun", "uvicorn", "gunicorn", "granian", "node", "pm2") if v.get(k))
    commit = f" at commit {m['prun_commit']}{' (modified)' if m.get('prun_tree_dirty') else ''}" \
        if m.get("prun_commit") else ""
    load = data.get("load_at_start") or m.get("loadavg") or []
    load_text = f", load average {' '.join(f'{x:.2f}' for x in load)} at the start" if load else ""
    return (f"Measured {m['date']}{commit} on {m['cpus']} CPUs ({m.get('cpu_model', '?')}{load_text}), "
            f"{m['platform']}, Python {m['python']}; prun's default balance {m.get('prun_default_balance', '?')}; "
            f"{peers}{' (--quick)' if data.get('quick') else ''}.")
