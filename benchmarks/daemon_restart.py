"""Connections refused while an app is restarted under load: `prun restart` beside `pm2 restart`.

    python -m benchmarks.daemon_restart [--restarts 5] [--clients 8]

Each tool serves a hello-world app with two workers (prun: benchmarks/apps/hello.py; PM2, cluster mode:
benchmarks/cluster/apps/tiny.js) on its own port and temporary home. Clients send GETs, a new connection
each, while the app is restarted `--restarts` times one after the other (each command waited for); a
refused connection, a reset, a timeout and a non-200 answer each count as a failure. Results:
benchmarks/results/daemon-restart.json and .md. PM2 is skipped when `pm2` is not on PATH.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PRUN = os.path.join(os.path.dirname(sys.executable), "prun")


class Load:
    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.counts = {"ok": 0, "refused": 0, "other": 0}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self) -> None:
        while not self.stop.is_set():
            kind = "ok"
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    kind = "other"
            except ConnectionRefusedError:
                kind = "refused"
            except (OSError, http.client.HTTPException):
                kind = "other"
            finally:
                conn.close()
            with self.lock:
                self.counts[kind] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def wait_serving(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing serves on port {port}")


def measure(start: list[str], restart: list[str], stop: list[str], env: dict[str, str], port: int,
            restarts: int, clients: int, cwd: Path) -> dict[str, float]:
    subprocess.run(start, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    try:
        wait_serving(port)
        with Load(port, clients) as load:
            time.sleep(1.0)  # steady load before the first restart
            began = time.monotonic()
            for _ in range(restarts):
                subprocess.run(restart, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
            took = time.monotonic() - began
            time.sleep(1.0)
        return {**load.counts, "restart_seconds": round(took / restarts, 2)}
    finally:
        subprocess.run(stop, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon_restart")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="prun-bench-", dir="/tmp")
    results: dict[str, dict[str, float]] = {}
    try:
        env = dict(os.environ, PRUN_HOME=os.path.join(root, "prun"))
        results["prun restart"] = measure(
            [PRUN, "start", "hello:app", "-i", "2", "--name", "hello", "-b", "127.0.0.1:18301", "--lifespan", "off"],
            [PRUN, "restart", "hello"], [PRUN, "kill"], env, 18301, args.restarts, args.clients, ROOT / "apps")
        pm2 = shutil.which("pm2")
        if pm2:
            env = dict(os.environ, PM2_HOME=os.path.join(root, "pm2"), PORT="18302")
            results["pm2 restart"] = measure(
                [pm2, "start", str(ROOT / "cluster" / "apps" / "tiny.js"), "-i", "2", "--name", "tiny"],
                [pm2, "restart", "tiny"], [pm2, "kill"], env, 18302, args.restarts, args.clients, ROOT)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "daemon-restart.json").write_text(json.dumps({"machine": machine, "restarts": args.restarts,
                                                             "clients": args.clients, "results": results}, indent=1)
                                                 + "\n")
    lines = ["# Connections refused during restarts under load", "",
             f"{machine}; {args.restarts} restarts in a row, {args.clients} clients, a new connection per request, "
             "two workers.", "", "| command | ok | refused | other failures | seconds per restart |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| `{label}` | {r['ok']:.0f} | {r['refused']:.0f} | {r['other']:.0f} | {r['restart_seconds']} |"
              for label, r in results.items()]
    (RESULTS / "daemon-restart.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
