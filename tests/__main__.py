"""The whole check CI runs: `python -m tests` lints, type-checks, then runs the suite under coverage.

Coverage follows every process the tests start (masters and workers alike: `patch = subprocess`), and the
report that ends the run counts all of them. Extra arguments go to pytest (`python -m tests -k reload`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    code = subprocess.call([sys.executable, "-m", *command], cwd=ROOT)
    if code:
        sys.exit(code)


def main(argv: list[str]) -> None:
    step("ruff", "check", "-q", "cluster", "runtime", "tests", "benchmarks", "examples")
    step("mypy")
    for stale in ROOT.glob(".coverage*"):
        if stale.is_file():
            stale.unlink()
    step("coverage", "run", "-m", "pytest", "-q", *argv)
    step("coverage", "combine", "-q")
    step("coverage", "report")


if __name__ == "__main__":
    main(sys.argv[1:])
