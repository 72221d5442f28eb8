"""How long `prun ls` takes with a running daemon and three apps, beside `pm2 ls` and `supervisorctl status`.

    python -m benchmarks.daemon_ls [--runs 30]

Each tool gets its own temporary home (PRUN_HOME, PM2_HOME, a supervisord.conf), three apps started, a few
warm-up calls, then `--runs` timed calls taken in turn (prun, pm2, supervisorctl, prun, ...), so the noise of
a shared machine hits them alike. The figure is the wall time of the whole command, from spawn to exit.
A tool that is not installed is skipped (pm2: `npm i -g pm2`; supervisorctl: `pip install supervisor`,
found on PATH or beside this Python). Results: benchmarks/results/daemon-ls.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
APPS = ROOT / "apps"
RESULTS = ROOT / "results"
PRUN = [os.path.join(os.path.dirname(sys.executable), "prun")]


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def prun_setup(root: str) -> tuple[list[str], dict[str, str], list[str]]:
    env = dict(os.environ, PRUN_HOME=os.path.join(root, "prun"))
    for name in ("a", "b", "c"):
        subprocess.run(PRUN + ["start", "hello:app", "--name", name, "-b", "127.0.0.1:0", "--lifespan", "off"],
                       env=env, cwd=APPS, check=True, stdout=subprocess.DEVNULL)
    return PRUN + ["ls"], env, PRUN + ["kill"]


def pm2_setup(root: str) -> tuple[list[str], dict[str, str], list[str]] | None:
    pm2 = shutil.which("pm2")
    if not pm2:
        return None
    env = dict(os.environ, PM2_HOME=os.path.join(root, "pm2"))
    app = ROOT / "cluster" / "apps" / "tiny.js"
    for i, name in enumerate(("a", "b", "c")):
        subprocess.run([pm2, "start", str(app), "--name", name, "-i", "1"],
                       env=dict(env, PORT=str(18231 + i)), check=True, stdout=subprocess.DEVNULL)
    return [pm2, "ls"], env, [pm2, "kill"]


def supervisor_setup(root: str) -> tuple[list[str], dict[str, str], list[str]] | None:
    here = os.path.dirname(sys.executable)
    ctl = shutil.which("supervisorctl") or shutil.which("supervisorctl", path=here)
    daemon = shutil.which("supervisord") or shutil.which("supervisord", path=here)
    if not ctl or not daemon:
        return None
    conf = os.path.join(root, "supervisord.conf")
    programs = "".join(f"[program:{n}]\ncommand=sleep 100000\n" for n in ("a", "b", "c"))
    Path(conf).write_text(
        f"[unix_http_server]\nfile={root}/supervisor.sock\n[supervisord]\nlogfile={root}/supervisord.log\n"
        f"pidfile={root}/supervisord.pid\nchildlogdir={root}\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{root}/supervisor.sock\n{programs}")
    subprocess.run([daemon, "-c", conf], check=True)
    deadline = time.monotonic() + 20
    while subprocess.run([ctl, "-c", conf, "status"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("supervisord did not start")
        time.sleep(0.1)
    return [ctl, "-c", conf, "status"], dict(os.environ), [ctl, "-c", conf, "shutdown"]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon_ls")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="prun-bench-", dir="/tmp")
    tools: dict[str, tuple[list[str], dict[str, str], list[str]]] = {}
    try:
        tools["prun ls"] = prun_setup(root)
        for label, setup in (("pm2 ls", pm2_setup), ("supervisorctl status", supervisor_setup)):
            found = setup(root)
            if found:
                tools[label] = found
        times: dict[str, list[float]] = {label: [] for label in tools}
        for command, env, _ in tools.values():
            for _ in range(args.warmup):
                timed(command, env)
        for _ in range(args.runs):
            for label, (command, env, _) in tools.items():
                times[label].append(timed(command, env))
    finally:
        for _, env, stop in tools.values():
            subprocess.run(stop, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)
    summary = {label: {"min_ms": round(min(t) * 1000, 1), "median_ms": round(statistics.median(t) * 1000, 1),
                       "max_ms": round(max(t) * 1000, 1), "runs": len(t)} for label, t in times.items()}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "daemon-ls.json").write_text(json.dumps({"machine": machine, "results": summary}, indent=1) + "\n")
    lines = ["# `prun ls` latency, three apps, daemon running", "", f"{machine}; {args.runs} runs each, in turn, "
             f"after {args.warmup} warm-up calls; wall time of the whole command.", "",
             "| command | min ms | median ms | max ms |", "|---|---:|---:|---:|"]
    lines += [f"| `{label}` | {s['min_ms']} | {s['median_ms']} | {s['max_ms']} |" for label, s in summary.items()]
    (RESULTS / "daemon-ls.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
