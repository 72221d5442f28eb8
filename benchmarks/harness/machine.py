"""Where a result was measured: the CPU, its load, the software; and the gate that keeps results taken on
a busy machine out of the committed figures.

Two measurements of the same scenario disagreed by 2x (benchmarks/README.md, "Why two runs disagreed"):
so every result carries the CPU model, the load average before and after, prun's balancing policy, the CPU
affinity of every process under test, and is labelled (or refused) when the machine was not quiet.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from prun.runtime import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[2]
# 1-minute load average above which a machine is called busy (other work competes for the CPUs the
# servers and wrk are pinned to). The figures in the README were taken below it.
MAX_LOAD = 1.5


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU model name (from /proc/cpuinfo, else platform.processor())."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Processor", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown"


def cpu_mhz(cpuinfo: str | None = None) -> float | None:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    values = [float(v.partition(":")[2]) for v in cpuinfo.splitlines() if v.startswith("cpu MHz")]
    return round(sum(values) / len(values)) if values else None


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def busy_reason(load: list[float], limit: float = MAX_LOAD) -> str | None:
    """Why a machine with these load averages (1, 5, 15 min) is too busy to measure on, or None."""
    if load and load[0] > limit:
        return f"load average {load[0]:.2f} > {limit:g}"
    return None


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def command_output(cmd: list[str], any_status: bool = False, first: bool = False) -> str | None:
    """The last (or first) line a command printed (None if it failed, unless `any_status`)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0 if first else -1] if (done.returncode == 0 or any_status) and text else None


def prun_default_balance() -> str:
    from prun.cluster.options import BY_NAME

    return str(BY_NAME["balance"].default)


def describe() -> dict[str, object]:
    """The machine and software a result was measured with (the load average is sampled now)."""
    from benchmarks.harness.servers import PM2_DIR

    pm2 = PM2_DIR / "node_modules" / "pm2" / "package.json"
    dirty = command_output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "cluster", "runtime"])
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "prun_commit": command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "prun_tree_dirty": bool(dirty),
        "prun_default_balance": prun_default_balance(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_mhz": cpu_mhz(),
        "loadavg": loadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "prun": version(DISTRIBUTION),
            **{name: version(name) for name in ("uvicorn", "gunicorn", "granian", "uvloop", "httptools", "fastapi",
                                                "starlette", "flask", "werkzeug", "websockets", "wsproto", "h2", "zttp",
                                                "hypercorn")},
            "wrk": (command_output(["wrk", "-v"], any_status=True, first=True) or "").split(" [")[0] or None,
            "node": command_output(["node", "--version"]),
            "pm2": json.loads(pm2.read_text())["version"] if pm2.exists() else None,
        },
    }


def wait_quiet(log, limit: float = 90.0, threshold: float = 30.0) -> float:  # noqa: ANN001
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
                log(f"  the machine is still busy ({busy:.0f}% CPU): measuring anyway")
            return round(busy, 1)
        if not said:
            log(f"  the machine is busy ({busy:.0f}% CPU before starting): waiting up to {limit:g}s")
            said = True


def affinity(pid: int) -> dict[str, dict[str, object]]:
    """The CPUs each process of a tree may run on and its threads, by role (`master` is `pid`, then its
    descendants): how many runnable threads a server puts on a CPU decides its share of a busy CPU."""
    import psutil

    out: dict[str, dict[str, object]] = {}
    try:
        root = psutil.Process(pid)
        for i, proc in enumerate([root, *root.children(recursive=True)]):
            out["master" if i == 0 else f"child{i}"] = {"cpus": sorted(proc.cpu_affinity() or []),
                                                         "threads": proc.num_threads(), "name": proc.name()}
    except (psutil.Error, AttributeError):
        pass
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants that still run.

    Divided by the requests served in between, two readings give the server's CPU time per request:
    a figure that another load on the machine changes far less than requests per second (a server that
    waits for the CPU does not use it), so it tells a slow server from a slowed-down one.
    """
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for proc in family:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total
