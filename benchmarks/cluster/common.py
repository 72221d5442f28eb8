"""What every scenario shares: the run context, statistics, the machine's description, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Context:
    quick: bool = False
    servers: list[str] = field(default_factory=list)
    results: Path = RESULTS
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prun-bench-")))
    reloads: int | None = None
    rounds: int | None = None

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def latency_summary(latencies: list[float]) -> dict[str, float | int | None]:
    """Milliseconds: count, p50, p90, p99, max."""
    ms = [x * 1000 for x in latencies]
    return {
        "count": len(ms),
        "p50_ms": _round(percentile(ms, 50)),
        "p90_ms": _round(percentile(ms, 90)),
        "p99_ms": _round(percentile(ms, 99)),
        "max_ms": _round(max(ms) if ms else None),
    }


def split_by_windows(done_at: list[float], latency: list[float], windows: list[tuple[float, float]]
                     ) -> tuple[list[float], list[float]]:
    """Latencies of requests that ended inside any window, and of the others."""
    inside, outside = [], []
    ordered = sorted(windows)
    for stamp, lat in zip(done_at, latency):
        hit = any(a <= stamp <= b for a, b in ordered)
        (inside if hit else outside).append(lat)
    return inside, outside


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _command_version(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip().splitlines()[-1] if done.returncode == 0 else None


def machine() -> dict[str, object]:
    """Where and with what a result was measured."""
    from benchmarks.cluster.procs import PM2_DIR

    pm2 = PM2_DIR / "node_modules" / "pm2" / "package.json"
    pm2_version = json.loads(pm2.read_text())["version"] if pm2.exists() else None
    root = Path(__file__).resolve().parents[2]
    commit = _command_version(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "prun_commit": commit,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "prun": _version("prun"),
            "uvicorn": _version("uvicorn"),
            "gunicorn": _version("gunicorn"),
            "granian": _version("granian"),
            "uvloop": _version("uvloop"),
            "httptools": _version("httptools"),
            "node": _command_version(["node", "--version"]),
            "pm2": pm2_version,
        },
    }


def write_json(ctx: Context, name: str, data: dict) -> dict:
    """Write cluster-NAME.json (with the machine's description); the data as written."""
    ctx.results.mkdir(parents=True, exist_ok=True)
    path = ctx.results / f"cluster-{name}.json"
    data = {"scenario": name, "quick": ctx.quick, "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    ctx.log(f"wrote {path}")
    return data


def write_md(ctx: Context, name: str, text: str) -> Path:
    ctx.results.mkdir(parents=True, exist_ok=True)
    path = ctx.results / f"cluster-{name}.md"
    path.write_text(text.rstrip() + "\n")
    ctx.log(f"wrote {path}")
    return path


def table(header: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(data: dict) -> str:
    m = data["machine"]
    v = m["versions"]
    peers = ", ".join(f"{k} {v[k]}" for k in ("prun", "uvicorn", "gunicorn", "granian", "node", "pm2") if v.get(k))
    commit = f" at commit {m['prun_commit']}" if m.get("prun_commit") else ""
    return (f"Measured {m['date']}{commit} on {m['cpus']} CPUs, {m['platform']}, Python {m['python']}; {peers}"
            f"{' (--quick)' if data.get('quick') else ''}.")


def wait_quiet(ctx: Context, limit: float = 90.0, threshold: float = 30.0) -> float:
    """Wait (at most `limit` s) until the CPUs are mostly idle, as other work would skew timings.

    Returns the last CPU use seen (percent of all CPUs), which the scenarios record beside their numbers.
    """
    import psutil

    deadline = time.monotonic() + limit
    said = False
    while True:
        busy = psutil.cpu_percent(interval=0.5)
        if busy < threshold or time.monotonic() > deadline:
            if busy >= threshold:
                ctx.log(f"  the machine is still busy ({busy:.0f}% CPU): measuring anyway")
            return round(busy, 1)
        if not said:
            ctx.log(f"  the machine is busy ({busy:.0f}% CPU before starting): waiting up to {limit:g}s")
            said = True
