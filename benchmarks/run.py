"""prun's HTTP server side by side with uvicorn, gunicorn (uvicorn worker) and granian, loaded with wrk.

    pip install -e .[bench]          # the peer servers
    python -m benchmarks             # every scenario; results in benchmarks/results/
    python -m benchmarks --scenarios pinned --rounds 5 --duration 5

Scenarios:
    pinned    one worker pinned to CPU 0 (taskset), wrk -t1 pinned to CPU 1
    unpinned  two workers, wrk -t2, no pinning
    reload    20 HUPs to the prun master during 30 s of wrk keep-alive load: socket errors and non-2xx

Every server serves benchmarks/apps/hello.py on 127.0.0.1. The servers take turns over several rounds
(the machine's noise hits them alike) and the medians are compared as ratios prun/peer. Every process
started here is killed at the end, even on error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
RESULTS = HERE / "results"
CONNECTIONS = 64


@dataclass
class Run:
    server: str
    round: int
    requests_per_s: float
    socket_errors: int
    non_2xx: int
    latency_p99_ms: float | None


@dataclass
class Scenario:
    name: str
    description: str
    runs: list[Run] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)  # prun / peer
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_commands(port: int, workers: int) -> dict[str, list[str]]:
    """How each server is started on `port` with `workers` workers, each with its defaults otherwise."""
    py = sys.executable
    uvicorn = [py, "-m", "uvicorn", "hello:app", "--app-dir", str(APPS), "--host", "127.0.0.1", "--port", str(port),
               "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    if workers > 1:
        uvicorn += ["--workers", str(workers)]
    return {
        "prun": [py, "-c", "from prun.cluster.cli import main; main()", "hello:app", "-i", str(workers),
                 "-b", f"127.0.0.1:{port}", "--chdir", str(APPS)],
        "uvicorn": uvicorn,
        "gunicorn": [py, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", str(workers),
                     "-b", f"127.0.0.1:{port}", "--chdir", str(APPS), "--log-level", "warning", "hello:app"],
        "granian": [py, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", str(workers), "--log-level", "warning", "--working-dir", str(APPS), "hello:app"],
    }


class Processes:
    """Every process this run starts, each in its own session so its whole group can be killed."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], cpus: str | None = None, **kwargs: object) -> subprocess.Popen[bytes]:
        if cpus is not None:
            cmd = ["taskset", "-c", cpus] + cmd
        env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(cmd, start_new_session=True, env=env, cwd=str(HERE.parent), **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the group left behind (workers)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc, grace=2.0)


def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing served on port {port} within {timeout:g} s")


def wrk(port: int, seconds: float, threads: int, cpus: str | None) -> Run:
    cmd = ["wrk", f"-t{threads}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", f"http://127.0.0.1:{port}/"]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Run:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    latency = None
    if p99:
        latency = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return Run("", 0, float(rps.group(1)), sum(int(g) for g in errors.groups()) if errors else 0,
               int(non2xx.group(1)) if non2xx else 0, latency)


def throughput(scenario: Scenario, servers: list[str], workers: int, server_cpus: str | None, wrk_cpus: str | None,
               wrk_threads: int, rounds: int, seconds: float, procs: Processes) -> None:
    """Start every server, then load them in turn, `rounds` times, rotating the order each round."""
    ports = {}
    for name in servers:
        port = free_port()
        proc = procs.start(server_commands(port, workers)[name], cpus=server_cpus,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_serving(port, proc)
        ports[name] = port
        wrk(port, 1.0, wrk_threads, wrk_cpus)  # warm-up
    for index in range(rounds):
        order = servers[index % len(servers):] + servers[: index % len(servers)]
        for name in order:
            run = wrk(ports[name], seconds, wrk_threads, wrk_cpus)
            run.server, run.round = name, index + 1
            scenario.runs.append(run)
            print(f"  {scenario.name} round {index + 1} {name:9} {run.requests_per_s:10.0f} req/s", flush=True)
    for name in servers:
        scenario.medians[name] = statistics.median(r.requests_per_s for r in scenario.runs if r.server == name)
    for name in servers:
        if name != "prun" and scenario.medians.get(name):
            scenario.ratios[name] = round(scenario.medians["prun"] / scenario.medians[name], 3)


def reload_under_load(scenario: Scenario, hups: int, seconds: float, procs: Processes) -> None:
    """HUPs to the prun master while wrk keeps every connection busy: nothing may fail."""
    port = free_port()
    master = procs.start(server_commands(port, 2)["prun"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []

    def read() -> None:
        assert master.stderr is not None
        for raw in master.stderr:
            lines.append(raw.decode(errors="replace").rstrip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_serving(port, master)
    result: list[Run] = []
    load = threading.Thread(target=lambda: result.append(wrk(port, seconds, 2, None)), daemon=True)
    load.start()
    time.sleep(1.0)
    interval = (seconds - 3.0) / hups
    for _ in range(hups):
        os.kill(master.pid, signal.SIGHUP)
        time.sleep(interval)
    load.join(seconds + 60)
    time.sleep(0.5)
    completed = sum("reload complete" in line for line in lines)
    failed = [line for line in lines if "reload failed" in line]
    if not result:
        raise RuntimeError("wrk gave no result during the reload scenario")
    run = result[0]
    run.server, run.round = "prun", 1
    scenario.runs.append(run)
    scenario.medians["prun"] = run.requests_per_s
    scenario.notes.append(f"{hups} HUPs sent, {completed} reloads completed, {len(failed)} failed "
                          f"(a HUP during a reload is queued, so a few may merge)")
    scenario.notes.append(f"socket errors: {run.socket_errors}, non-2xx responses: {run.non_2xx}")
    print(f"  reload: {run.requests_per_s:.0f} req/s, {completed} reloads, socket errors {run.socket_errors}, "
          f"non-2xx {run.non_2xx}", flush=True)


def prun_balance() -> str:
    """prun's default balancing policy, which these runs use (it decides who accepts connections)."""
    from prun.cluster.options import BY_NAME

    return str(BY_NAME["balance"].default)


def markdown(scenarios: list[Scenario], meta: dict[str, object]) -> str:
    out = ["# prun HTTP benchmark", "", f"- date: {meta['date']}", f"- machine: {meta['machine']}",
           f"- prun with its default balancing: {meta['prun_balance']}",
           f"- {meta['connections']} keep-alive connections, {meta['seconds']:g} s per run, "
           f"{meta['rounds']} rounds, app: benchmarks/apps/hello.py", ""]
    for sc in scenarios:
        out += [f"## {sc.name}", "", sc.description, ""]
        if sc.name == "reload":
            out += [f"- {note}" for note in sc.notes] + [f"- throughput during reloads: {sc.medians['prun']:.0f} req/s", ""]
            continue
        out += ["| server | median req/s | prun / server |", "|---|---:|---:|"]
        for name, median in sc.medians.items():
            ratio = "" if name == "prun" else f"{sc.ratios.get(name, 0):.2f}x"
            out.append(f"| {name} | {median:.0f} | {ratio} |")
        out += [""] + [f"- {note}" for note in sc.notes] + [""]
    return "\n".join(out)


def check_tools(scenarios: list[str]) -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"benchmarks: missing {', '.join(missing)} (apt-get install wrk util-linux)")
    if "pinned" in scenarios and (os.cpu_count() or 1) < 2:
        sys.exit("benchmarks: the pinned scenario needs 2 CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="pinned,unpinned,reload")
    parser.add_argument("--servers", default="prun,uvicorn,gunicorn,granian")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--hups", type=int, default=20)
    parser.add_argument("--reload-seconds", type=float, default=30.0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "prun" not in servers:
        servers.insert(0, "prun")
    check_tools(names)
    procs = Processes()
    scenarios: list[Scenario] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if "pinned" in names:
            sc = Scenario("pinned", "One worker pinned to CPU 0 (taskset -c 0), wrk -t1 pinned to CPU 1.")
            scenarios.append(sc)
            throughput(sc, servers, 1, "0", "1", 1, args.rounds, args.duration, procs)
            procs.stop_all()
        if "unpinned" in names:
            sc = Scenario("unpinned", "Two workers (-i 2 / --workers 2 / -w 2), wrk -t2, no pinning.")
            scenarios.append(sc)
            throughput(sc, servers, 2, None, None, 2, args.rounds, args.duration, procs)
            procs.stop_all()
        if "reload" in names:
            sc = Scenario("reload", f"prun -i 2 under wrk -t2 -c{CONNECTIONS} for {args.reload_seconds:g} s while "
                                    f"the master gets {args.hups} HUPs (rolling reloads). Target: zero errors.")
            scenarios.append(sc)
            reload_under_load(sc, args.hups, args.reload_seconds, procs)
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "connections": CONNECTIONS,
            "seconds": args.duration, "rounds": args.rounds, "prun_balance": prun_balance(),
            "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}.json").write_text(json.dumps({"meta": meta, "scenarios": [asdict(s) for s in scenarios]}, indent=2))
    report = markdown(scenarios, meta)
    (out / f"{stamp}.md").write_text(report)
    print("\n" + report)
    print(f"results: {out / stamp}.json and .md")
    return 0
