"""How many lines a second the daemon's log writer files, rotating, with 2 processes writing at once.

    python benchmarks/log_writer.py [--lines 200000] [--max-size 1M]

Starts cluster/daemon/logfiles.py as the daemon does (two pipes), two writer processes printing numbered
100-byte lines as fast as they can (line-buffered as prun's workers are: one print, one write), and measures the time until every line is in
the files; then checks that none was lost, repeated or split. Prints one line of results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

WRITER = """
import sys
sys.stdout.reconfigure(line_buffering=True, write_through=False)  # as prun's workers: one print, one write
pid, count = sys.argv[1], int(sys.argv[2])
pad = "x" * 80
for n in range(count):
    print(f"w {pid} {n} {pad}", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000, help="per writer")
    parser.add_argument("--max-size", default=str(1 << 20))
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="prun-logbench-")
    out = os.path.join(directory, "app-out.log")
    err = os.path.join(directory, "app-err.log")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    writer = subprocess.Popen([sys.executable, "-m", "prun.cluster.daemon.logwriter", str(out_r), str(err_r), out,
                               err, "--max-size", args.max_size, "--retain", "100000"], pass_fds=(out_r, err_r))
    os.close(out_r)
    os.close(err_r)
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i), str(args.lines)], stdout=out_w, stderr=err_w)
             for i in range(2)]
    os.close(out_w)
    os.close(err_w)
    for proc in procs:
        proc.wait()
    writer.wait()  # EOF on both pipes: every line is written
    seconds = time.perf_counter() - began
    seen: dict[tuple[str, str], int] = {}
    files = [f for f in os.listdir(directory) if f.startswith("app-out.log") and not f.endswith(".lock")]
    broken = 0
    for name in files:
        for line in open(os.path.join(directory, name)):
            words = line.split()
            if len(words) != 4 or len(words[3]) != 80:
                broken += 1
                continue
            seen[(words[1], words[2])] = seen.get((words[1], words[2]), 0) + 1
    lost = 2 * args.lines - len(seen)
    repeated = sum(v - 1 for v in seen.values())
    total = 2 * args.lines
    print(f"{total} lines ({total * 100 / 1e6:.0f} MB) in {seconds:.2f} s: {total / seconds:,.0f} lines/s, "
          f"{len(files) - 1} rotations; lost {lost}, repeated {repeated}, split {broken}")
    shutil.rmtree(directory)


if __name__ == "__main__":
    main()
