"""How prun installs: under its own name only, and usable from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support import EXAMPLES

ROOT = EXAMPLES.parent


def test_the_wheel_holds_nothing_but_prun(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )
    (wheel,) = tmp_path.glob("prun-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"prun"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "prun/cluster/cli.py" in names and "prun/runtime/container.py" in names


def test_prun_from_the_repository_root_reports_the_missing_module(prun) -> None:
    master = prun("nosuchmodule:app", "-b", "127.0.0.1:0", cwd=ROOT)
    assert master.wait_exit(10) == 3
    errors = [line for line in master.output.splitlines() if line.startswith("prun: error:")]
    assert errors == [line for line in errors if "cannot import 'nosuchmodule'" in line] and len(errors) == 1
