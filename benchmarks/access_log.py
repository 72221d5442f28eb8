"""What --access-log costs a worker: CPU per request with it off and with `common` on stdout (to a file).

    python -m benchmarks.access_log [--rounds 6] [--seconds 3]

One worker of benchmarks/apps/tiny.py (prun's whole tree pinned to CPU 0), `wrk -t1 -c16` keep-alive pinned
to CPU 1, the two set-ups taking turns round by round. CPU time (user + system of the master and the
worker, from /proc) divided by the requests wrk completed: a busy machine disturbs it less than
throughput. Writes benchmarks/results/access-log.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
PRUN = os.path.join(os.path.dirname(sys.executable), "prun")


def one_round(mode: str, seconds: float, port: int, out: Path) -> float:
    """Microseconds of CPU per request, one worker, the access log `mode` (off or common)."""
    with open(out, "w") as sink:
        proc = subprocess.Popen(["taskset", "-c", "0", PRUN, "tiny:app", "-i", "1", "-b", f"127.0.0.1:{port}",
                                 "--access-log", mode], cwd=HERE / "apps", stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        before = sum(sum(p.cpu_times()[:2]) for p in tree)
        report = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds:g}s",
                                 f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
        after = sum(sum(p.cpu_times()[:2]) for p in tree)
        match = re.search(r"(\d+) requests in", report)
        assert match, report
        return (after - before) / int(match.group(1)) * 1e6
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"off": [], "common": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for i, mode in enumerate(results):
                results[mode].append(one_round(mode, args.seconds, 20000 + 2 * n + i, Path(tmp) / f"{mode}.log"))
    lines = ["# --access-log: CPU per request", "", f"`python -m benchmarks.access_log --rounds {args.rounds} "
             f"--seconds {args.seconds:g}`, {time.strftime('%Y-%m-%d %H:%MZ', time.gmtime())}, load average "
             f"{os.getloadavg()[0]:.1f}", "", "| --access-log | CPU per request, median | rounds |", "|---|---:|---|"]
    for mode, values in results.items():
        lines.append(f"| {mode} | {statistics.median(values):.1f} µs | {', '.join(f'{v:.1f}' for v in values)} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results" / "access-log.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
