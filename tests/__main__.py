"""The whole check CI runs: `python -m tests` lints, type-checks, then runs the suite under coverage.

Coverage follows every process the tests start (masters and workers alike: `patch = subprocess`), and the
report that ends the run counts all of them. The suite runs two tests at a time (pytest-xdist). Extra arguments
go to pytest (`python -m tests -k reload`; `python -m tests -n 0` for one test at a time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    code = subprocess.call([sys.executable, "-m", *command], cwd=ROOT)
    if code:
        sys.exit(code)


def ensure_h2load() -> None:
    """tests/test_http2.py loads prun with h2load (nghttp2's client): installed from Debian's packages when missing
    and this is a root shell with apt (a CI machine); otherwise the test says what to install."""
    if shutil.which("h2load") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    print("$ apt-get install nghttp2-client", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    if subprocess.call(["apt-get", "update", "-qq"], **quiet) == 0:  # type: ignore[call-overload]
        subprocess.call(["apt-get", "install", "-y", "-qq", "nghttp2-client"], **quiet)  # type: ignore[call-overload]


def main(argv: list[str]) -> None:
    ensure_h2load()
    step("ruff", "check", "-q", "cluster", "runtime", "tests", "benchmarks", "examples")
    step("mypy")
    for stale in ROOT.glob(".coverage*"):
        if stale.is_file():
            stale.unlink()
    # Two tests at a time (pytest-xdist): most of a test's time is waiting on real processes, and the suite
    # stays well inside its 10 minutes on 2 CPUs. `-n 0` runs it one test at a time.
    jobs = [] if any(arg.startswith(("-n", "--numprocesses")) for arg in argv) else ["-n", "2"]
    step("coverage", "run", "-m", "pytest", "-q", *jobs, *argv)
    step("coverage", "combine", "-q")
    step("coverage", "report")


if __name__ == "__main__":
    main(sys.argv[1:])
