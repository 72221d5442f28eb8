"""wrk, the load generator of the throughput scenarios: the command, one run, and its output parsed."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess

from benchmarks.harness.procs import REGISTRY

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def command(port: int, *, seconds: float, threads: int = 1, connections: int = 64, close: bool = False,
            cpus: str | None = None, path: str = "/", timeout: float = 5.0, tls: bool = False) -> list[str]:
    """wrk's command line; `close` sends `Connection: close` (a new connection per request), `cpus` pins it,
    `tls` loads https:// (wrk does not check the certificate). wrk takes whole seconds: `seconds` is rounded
    (at least 1)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", f"{timeout:g}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}")
    return (["taskset", "-c", cpus] if cpus is not None else []) + cmd


def parse(out: str) -> dict:
    """wrk's report: requests/s, requests, p50/p99 latency (ms), socket errors by kind, non-2xx replies."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk printed no result: {out[-400:]!r}")
    total = re.search(r"(\d+) requests in", out)
    result: dict = {"requests_per_s": float(rps.group(1)), "requests": int(total.group(1)) if total else None}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        result[f"p{q}_ms"] = round(float(m.group(1)) * _UNITS[m.group(2)], 3) if m else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                       map(int, errors.groups()))) if errors else {}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def run(port: int, **options: object) -> dict:
    """One wrk run (see `command` for the options), killed if it outlives its duration by 30 s; with wrk's
    own CPU seconds (`client_cpu_s`, from the rusage of the children this process reaped meanwhile: wrk
    alone, as the scenarios run one wrk at a time) and that over the run's length (`client_cpu_pct`, 100
    per busy CPU: near 100 x threads, wrk was the limit)."""
    seconds = max(1, round(float(options["seconds"])))  # type: ignore[arg-type]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = REGISTRY.popen(command(port, **options), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # type: ignore[arg-type]
                          text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    finally:
        REGISTRY.kill_tree(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["client_cpu_s"] = round(cpu, 3)
    result["client_cpu_pct"] = round(cpu / seconds * 100, 1)
    return result


def missing_tools() -> list[str]:
    return [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
