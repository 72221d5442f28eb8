"""HTTP/2 throughput with h2load, prun beside granian (--http 2) and hypercorn; and reloads under HTTP/2 load.

    python -m benchmarks.http2                      # every scenario; results/http2.json and .md
    python -m benchmarks.http2 --rounds 3 --seconds 3 --scenarios pinned-h2c --apps hello_cl
    python -m benchmarks.http2 --reloads 20         # only the reload scenario (prun, both policies)

Scenarios: `pinned-h2c` / `pinned-h2` (one worker, the server's whole tree on CPU 0, h2load on CPU 1; clear
text with prior knowledge, or TLS with ALPN h2) and `i2-h2c` / `i2-h2` (two workers, nothing pinned).
h2load opens 16 connections with up to 10 streams each (`-c 16 -m 10`) and makes up to 3,000 requests on
each (`-n 48000`; fewer for a slow server, so that about three batches fit), again and again until
--seconds have passed, after a small batch as warm-up: the rate is the requests over h2load's own times. Batches, not a timed run, because prun on zttp (`prun-zttp`,
--http2-engine zttp) sends a connection away with GOAWAY after about 3,000 streams (zttp's bound is 4,096)
and h2load does not open a new connection after a GOAWAY; every server gets the same batches. The servers
take turns round by round, and every figure is the median of the rounds, with the ratios taken round by
round. uvicorn has no HTTP/2 (as of 0.3x): it is not in the table.

The reload scenario runs prun -i 2 under tests/h2_wire.H2Load (4 clients, 8 streams in flight each, a new
connection after each GOAWAY, REFUSED_STREAM and streams above a GOAWAY's last id sent again) and sends
--reloads HUPs, waiting for each to complete; h2load under the same HUPs is shown too: it opens no new
connection after a GOAWAY, so every request a client had left counts as failed there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import machine, stats
from benchmarks.harness.procs import REGISTRY, Output, free_port, stop_on_signals
from benchmarks.harness.tls import Certificate, make_certificate

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "benchmarks" / "apps"
RESULTS = ROOT / "benchmarks" / "results"
APP_TARGETS = {"hello_cl": "shapes:hello_cl", "json": "shapes:json"}
SCENARIOS = {
    "pinned-h2c": {"instances": 1, "pin": True, "tls": False},
    "pinned-h2": {"instances": 1, "pin": True, "tls": True},
    "i2-h2c": {"instances": 2, "pin": False, "tls": False},
    "i2-h2": {"instances": 2, "pin": False, "tls": True},
}
SERVERS = ["prun", "prun-zttp", "granian", "hypercorn"]
H2LOAD_COUNTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed")
PER_CONNECTION = 3000  # requests per h2load connection in a batch (below prun-zttp's bound of streams)


def exe(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else shutil.which(name) or name


def command(server: str, target: str, port: int, instances: int, cert: Certificate | None) -> list[str]:
    if server in ("prun", "prun-zttp"):
        cmd = [exe("prun"), target, "-b", f"127.0.0.1:{port}", "-i", str(instances), "--http", "2"]
        cmd += ["--http2-engine", "zttp" if server == "prun-zttp" else "h2"]
        return cmd + (["--certfile", str(cert.cert), "--keyfile", str(cert.key)] if cert else [])
    if server == "granian":
        cmd = [exe("granian"), "--interface", "asgi", "--http", "2", "--workers", str(instances), "--host",
               "127.0.0.1", "--port", str(port), "--working-dir", str(APPS)]
        return cmd + (["--ssl-certificate", str(cert.cert), "--ssl-keyfile", str(cert.key)] if cert else []) + [target]
    if server == "hypercorn":
        cmd = [exe("hypercorn"), target, "-b", f"127.0.0.1:{port}", "-w", str(instances), "-k", "uvloop"]
        return cmd + (["--certfile", str(cert.cert), "--keyfile", str(cert.key)] if cert else [])
    raise ValueError(server)


def serving(port: int, tls: bool, timeout: float = 30.0) -> None:
    """Wait until an HTTP/2 request answers 200 (h2load, one request)."""
    deadline = time.monotonic() + timeout
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    while time.monotonic() < deadline:
        out = subprocess.run(["h2load", "-n", "1", "-c", "1", url], capture_output=True, text=True).stdout
        if "1 succeeded" in out:
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing answers HTTP/2 on {url}")


def h2load_batch(url: str, requests: int, cpu: str | None) -> dict:
    cmd = ["h2load", "-c", "16", "-m", "10", "-t", "1", "-n", str(requests), url]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    took = re.search(r"finished in ([\d.]+)(m?s),", out)
    done = H2LOAD_COUNTS.search(out)
    if took is None or done is None:
        raise RuntimeError(f"h2load said: {out[-500:]}")
    seconds = float(took.group(1)) / (1000 if took.group(2) == "ms" else 1)
    return {"seconds": seconds, "succeeded": int(done.group(3)), "failed": int(done.group(4))}


def h2load(port: int, tls: bool, seconds: float, cpu: str | None, tree: int) -> dict:
    """Batches of up to PER_CONNECTION requests on each of 16 connections until `seconds` have passed (after
    a batch of warm-up): the rate over h2load's times, and the server tree's CPU per request."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    warm = h2load_batch(url, 16 * 200, cpu)  # warm-up; its rate sizes the batches: about 3 in `seconds`
    per_connection = int(min(PER_CONNECTION, max(100, warm["succeeded"] / warm["seconds"] * seconds / 16 / 3)))
    cpu_before = machine.tree_cpu_seconds(tree)
    total = {"seconds": 0.0, "succeeded": 0, "failed": 0, "batches": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = h2load_batch(url, 16 * per_connection, cpu)
        for key in ("seconds", "succeeded", "failed"):
            total[key] += batch[key]
        total["batches"] += 1
    cpu = machine.tree_cpu_seconds(tree) - cpu_before
    return {"rps": round(total["succeeded"] / total["seconds"], 1), "succeeded": total["succeeded"],
            "failed": total["failed"], "batches": total["batches"],
            "cpu_us": round(cpu / max(1, total["succeeded"]) * 1e6, 1)}


def one_round(server: str, scenario: dict, target: str, cert: Certificate | None, seconds: float) -> dict:
    port = free_port()
    cmd = command(server, target, port, scenario["instances"], cert)
    if scenario["pin"]:
        cmd = ["taskset", "-c", "0", *cmd]
    proc = REGISTRY.popen(cmd, cwd=str(APPS), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = Output(proc.stdout)
    try:
        serving(port, cert is not None)
        return h2load(port, cert is not None, seconds, "1" if scenario["pin"] else None, proc.pid)
    finally:
        REGISTRY.kill_tree(proc)
        out.tail()


def throughput(args: argparse.Namespace, cert: Certificate) -> dict:
    data: dict = {}
    for scenario_name in args.scenarios:
        scenario = SCENARIOS[scenario_name]
        for app in args.apps:
            runs: dict[str, list[dict]] = {name: [] for name in args.servers}
            for index in range(args.rounds):
                order = args.servers if index % 2 == 0 else list(reversed(args.servers))
                for name in order:
                    try:
                        run = one_round(name, scenario, APP_TARGETS[app], cert if scenario["tls"] else None,
                                        args.seconds)
                    except (RuntimeError, TimeoutError) as exc:
                        print(f"{scenario_name} {app} {name}: {exc}", flush=True)
                        continue
                    runs[name].append(run)
                    print(f"{scenario_name} {app} round {index + 1} {name}: {run}", flush=True)
            block = {"runs": runs, "rps": {n: stats.spread([r["rps"] for r in rs]) for n, rs in runs.items()},
                     "cpu_us": {n: stats.spread([r["cpu_us"] for r in rs]) for n, rs in runs.items()},
                     "ratios": {f"{p} / {n}": stats.ratio_spread([r["rps"] for r in runs[p]], [r["rps"] for r in runs[n]])
                                for p, n in pairs(args.servers) if runs[p] and runs[n]}}
            data[f"{scenario_name} {app}"] = block
    return data


def pairs(servers: list[str]) -> list[tuple[str, str]]:
    """(prun's flavour, a peer) for each ratio the table shows."""
    return [(p, n) for p in servers if p.startswith("prun") for n in servers if not n.startswith("prun")]


def reloads(hups: int) -> dict:
    """prun -i 2 under HTTP/2 load, `hups` reloads, for each engine and balancing policy (h2load on h2 only: on
    zttp its connections end after about 3,000 streams, and it does not open new ones)."""
    sys.path.insert(0, str(ROOT))
    from tests.h2_wire import H2Load

    results = {}
    for engine, balance, client in [(e, b, c) for e in ("h2", "zttp") for b in ("leastconn", "shared")
                                    for c in ("h2_wire", "h2load") if (e, c) != ("zttp", "h2load")]:
        port = free_port()
        proc = REGISTRY.popen([exe("prun"), APP_TARGETS["hello_cl"], "-b", f"127.0.0.1:{port}", "-i", "2",
                               "--http", "2", "--balance", balance, "--http2-engine", engine], cwd=str(APPS),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        out = Output(proc.stdout)
        try:
            serving(port, False)
            began = time.monotonic()
            if client == "h2_wire":
                with H2Load(port, clients=4, streams=8) as load:
                    done = hup(proc.pid, out, hups)
                results[f"{engine} {balance} {client}"] = {
                    "reloads": done, "served": load.ok, "failed": load.failed, "refused_and_retried": load.refused,
                    "connections": load.connections, "seconds": round(time.monotonic() - began, 1),
                    "errors": load.errors[:5]}
            else:
                h2 = subprocess.Popen(["h2load", "-c", "4", "-m", "8", "-t", "1", "-D", str(round(hups * 1.5 + 5)),
                                       f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
                time.sleep(1)
                done = hup(proc.pid, out, hups)
                text = h2.communicate(timeout=hups * 2 + 60)[0]
                counts = H2LOAD_COUNTS.search(text)
                results[f"{engine} {balance} {client}"] = {"reloads": done, "h2load": counts.group(0) if counts else text[-300:]}
            print(engine, balance, client, results[f"{engine} {balance} {client}"], flush=True)
        finally:
            REGISTRY.kill_tree(proc)
    return results


def hup(pid: int, out: Output, hups: int) -> int:
    done = 0
    for _ in range(hups):
        seen = out.count(r"reload complete")
        os.kill(pid, signal.SIGHUP)
        out.wait(r"reload complete", 60, count=seen + 1)
        done += 1
        time.sleep(0.5)
    return done


def markdown(data: dict) -> str:
    lines = [f"# HTTP/2 (h2load), {data['when']}", "", f"Machine: {data['machine']}; load average at the start "
             f"{data['load']}.", ""]
    if data.get("throughput"):
        ratios = [f"{p} / {n}" for p, n in pairs(data["servers"])]
        lines += ["| scenario, app | " + " | ".join(f"{n} req/s" for n in data["servers"]) + " | "
                  + " | ".join(ratios) + " | " + " | ".join(f"{n} CPU µs/req" for n in data["servers"]) + " |",
                  "|---|" + "---:|" * (2 * len(data["servers"]) + len(ratios))]
        for key, block in data["throughput"].items():
            cells = []
            for n in data["servers"]:
                s = block["rps"][n]
                cells.append(f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})" if s.get("median") else "-")
            for n in ratios:
                r = block["ratios"].get(n)
                cells.append(f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})" if r and r.get("median") else "-")
            for n in data["servers"]:
                s = block["cpu_us"][n]
                cells.append(f"{s['median']:.0f}" if s.get("median") else "-")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if data.get("reloads"):
        lines += ["", "Reloads (prun -i 2, HTTP/2 clear text):", ""]
        for key, value in data["reloads"].items():
            lines.append(f"- {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--apps", default="hello_cl,json")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--reloads", type=int, default=0, help="only the reload scenario, with this many HUPs")
    parser.add_argument("--name", default="http2")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios.split(",")
    args.apps = args.apps.split(",")
    args.servers = args.servers.split(",")
    stop_on_signals()
    data: dict = {"when": time.strftime("%Y-%m-%d %H:%MZ", time.gmtime()), "machine": machine.cpu_model(),
                  "load": machine.loadavg(), "servers": args.servers}
    path = RESULTS / f"{args.name}.json"
    if path.exists():
        data = {**json.loads(path.read_text()), **{k: data[k] for k in ("when", "load")}}
    if args.reloads:
        data["reloads"] = reloads(args.reloads)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data["throughput"] = throughput(args, make_certificate(Path(tmp)))
        data["servers"] = args.servers
    path.write_text(json.dumps(data, indent=1))
    (RESULTS / f"{args.name}.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
