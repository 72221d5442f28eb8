"""HTTPS keep-alive throughput, prun beside uvicorn and granian: `python -m benchmarks --tls` (benchmarks/run.py).

    python -m benchmarks.https                       # pinned and -i 2, hello_cl, keep-alive; results/https.*
    python -m benchmarks.https --quick --allow-busy  # a smoke run (results/smoke/)
    python -m benchmarks.https --scenarios pinned --servers prun,uvicorn --rounds 7

Every option of `python -m benchmarks` applies; --tls is implied.
"""

import sys

from benchmarks.run import main

if __name__ == "__main__":
    sys.exit(main(["--tls", *sys.argv[1:]]))
