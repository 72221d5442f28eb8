"""The WebSocket echo load client (harness/ws_client.c): compiled with the C compiler at run time, run as a
process of its own (pinned like wrk), its JSON report read.

A Python client (the `websockets` library's) costs more CPU per message than the servers under test do,
so it would measure itself; this one spends a few system calls per message (see ws_client.c).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from benchmarks.harness.procs import REGISTRY

SOURCE = Path(__file__).with_name("ws_client.c")


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build(directory: Path) -> Path:
    """Compile the client into `directory`; its path. One clear error when there is no C compiler."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) to build the WebSocket client: apt-get install gcc")
    out = directory / "ws_client"
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {SOURCE.name} failed: {done.stderr.strip()[-600:]}")
    return out


def command(binary: Path, port: int, *, seconds: float, connections: int = 64, size: int = 11,
            cpus: str | None = None) -> list[str]:
    cmd = [str(binary), str(port), str(connections), str(size), f"{seconds:g}"]
    return (["taskset", "-c", cpus] if cpus is not None else []) + cmd


def parse(out: str, err: str = "", returncode: int = 0) -> dict:
    """The client's report; a RuntimeError with the client's own line when it failed."""
    if returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"the WebSocket client exited with {returncode}")
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"the WebSocket client printed no report: {out[-300:]!r} {err[-300:]!r}") from None
    window = report["seconds"]
    cpu = report["client_cpu_user_s"] + report["client_cpu_system_s"]
    report["client_cpu_pct"] = round(cpu / window * 100, 1) if window else None
    return report


def run(binary: Path, port: int, **options: object) -> dict:
    """One run of the client (see `command`), killed if it outlives its duration by 30 s."""
    seconds = float(options["seconds"])  # type: ignore[arg-type]
    proc = REGISTRY.popen(command(binary, port, **options), stdout=subprocess.PIPE,  # type: ignore[arg-type]
                          stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=seconds + 30)
    finally:
        REGISTRY.kill_tree(proc)
    return parse(out, err, proc.returncode)
