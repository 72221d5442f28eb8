"""What the broken-pipe guard on a worker's stdout costs a print (runtime/output.py).

    python benchmarks/worker_print.py [--prints 300000] [--rounds 5]

Runs a loop of `print()`s of 100-byte lines in a fresh interpreter, its stdout set up as a worker's was
before the guard (sys.stdout reconfigured line-buffered) and as it is now (output.install()), into a pipe
that `cat` drains and into /dev/null; the two set-ups alternate, round after round. Prints the median
prints per second of CPU time of each (the machine may be busy), and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

LOOP = """
import sys, time
if sys.argv[1] == "guarded":
    from prun.runtime import output
    output.install()
else:
    sys.stdout.reconfigure(line_buffering=True, write_through=False)
count = int(sys.argv[2])
pad = "x" * 80
began = time.process_time()
for n in range(count):
    print(f"line {n:08d} {pad}")
sys.stderr.write(f"{count / (time.process_time() - began)}\\n")
"""


def run(setup: str, target: str, prints: int) -> float:
    """Prints per second of one run into `target` ('pipe' or 'devnull')."""
    if target == "pipe":
        drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            result = subprocess.run([sys.executable, "-c", LOOP, setup, str(prints)], stdout=drain.stdin,
                                    stderr=subprocess.PIPE, text=True, check=True)
        finally:
            assert drain.stdin is not None
            drain.stdin.close()
            drain.wait()
    else:
        result = subprocess.run([sys.executable, "-c", LOOP, setup, str(prints)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, check=True)
    return float(result.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prints", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for target in ("pipe", "devnull"):
        rates: dict[str, list[float]] = {"plain": [], "guarded": []}
        for _ in range(args.rounds):
            for setup in rates:
                rates[setup].append(run(setup, target, args.prints))
        plain, guarded = (statistics.median(rates[s]) for s in ("plain", "guarded"))
        print(f"{target:8} plain {plain:>10,.0f} prints/s   guarded {guarded:>10,.0f} prints/s   "
              f"guarded/plain {guarded / plain:.3f}")


if __name__ == "__main__":
    main()
