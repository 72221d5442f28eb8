"""How prun installs: as the distribution prun-cluster, under the package prun only, usable from any directory.

The distribution is built as a release is (`python -m build`: the sdist, then the wheel from the sdist),
checked with `twine check`, then installed with its extras into a clean virtual environment (not editable,
not this checkout) of the Python running the tests and of Python 3.13 when the machine has it; that install
then serves the example app. Its dependencies come from the index pip is configured with (pip's cache makes
a second run quick).
"""

from __future__ import annotations

import email.parser
import glob
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from tests.support import EXAMPLES

ROOT = EXAMPLES.parent
DISTRIBUTION = "prun-cluster"
EXTRAS = {"ws": "websockets", "watch": "watchfiles", "monit": "rich", "metrics": "prometheus_client"}


@dataclass
class Dist:
    sdist: Path
    wheel: Path
    metadata: Message


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    # Built from a copy of the checkout: the sdist step writes into its source tree (egg-info, a staging
    # directory), which two runs in one checkout would share.
    source = tmp_path_factory.mktemp("source") / "prun"
    shutil.copytree(ROOT, source, ignore=lambda directory, names: [
        n for n in names if n.startswith(".") or n in ("build", "dist", "__pycache__") or n.endswith(".egg-info")])
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                           capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stdout + built.stderr
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return Dist(sdist, wheel, metadata)


def pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def test_the_sdist_and_the_wheel_are_prun_cluster_and_pass_twine_check(dist: Dist) -> None:
    version = pyproject_version()
    assert dist.metadata["Name"] == DISTRIBUTION and dist.metadata["Version"] == version
    assert dist.wheel.name == f"prun_cluster-{version}-py3-none-any.whl"
    assert dist.sdist.name in (f"prun_cluster-{version}.tar.gz", f"prun-cluster-{version}.tar.gz")
    assert set(EXTRAS) <= set(dist.metadata.get_all("Provides-Extra") or [])
    # requires-python's floor is the oldest Python the classifiers name (the ones the suite was run on).
    claimed = sorted(tuple(map(int, c.rsplit(" ", 1)[1].split("."))) for c in dist.metadata.get_all("Classifier") or []
                     if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert claimed and dist.metadata["Requires-Python"] == ">={}.{}".format(*claimed[0])
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist.sdist), str(dist.wheel)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_wheel_holds_nothing_but_prun(dist: Dist) -> None:
    names = zipfile.ZipFile(dist.wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"prun"}
    assert "prun/cluster/cli.py" in names and "prun/runtime/container.py" in names


def python(version: str) -> str | None:
    """An interpreter of this version on this machine, on PATH or under pyenv's versions, that runs."""
    candidates = [shutil.which(f"python{version}"),
                  *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))]
    for candidate in filter(None, candidates):  # a pyenv shim is on PATH even when it cannot run that version
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@pytest.fixture(params=["running", "3.13"])
def interpreter(request: pytest.FixtureRequest) -> str:
    if request.param == "running":
        return sys.executable
    if sys.version_info[:2] == (3, 13):
        pytest.skip("the tests run on Python 3.13: the 'running' case installs on it")
    found = python(request.param)
    if found is None:
        pytest.skip(f"no Python {request.param} on this machine (looked for python{request.param} on PATH and in "
                    f"~/.pyenv/versions)")
    return found


def test_the_wheel_installed_in_a_clean_venv_serves_the_example(dist: Dist, interpreter: str, tmp_path: Path,
                                                                 prun) -> None:
    venv = tmp_path / "venv"
    # With the pip that Python bundles: an older pip run with --python on a newer Python can fail there.
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
    extras = ",".join(EXTRAS)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"{dist.wheel}[{extras}]"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    version = subprocess.run([str(venv / "bin" / "prun"), "--version"], capture_output=True, text=True, timeout=30,
                             cwd=tmp_path)
    assert version.stdout == f"prun, version {pyproject_version()}\n", version.stderr
    # prun and each extra's library import from the venv (this checkout holds no prun/ to import).
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import prun.cluster, prun.runtime, " + ", ".join(EXTRAS.values()) + "; print(prun.cluster.__file__)"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv)

    master = prun("app:server", "-b", "127.0.0.1:0", "--health", "127.0.0.1:0", cwd=EXAMPLES,
                  command=[str(venv / "bin" / "prun")])
    port = master.wait_ready(60)
    health = int(master.wait_for(r"health endpoint on http://127\.0\.0\.1:(\d+)/").group(1))
    assert get(port, "/") == (200, b"hey\n")
    status, body = get(health, "/metrics")  # served by the [metrics] extra's prometheus_client
    assert status == 200 and b"prun_workers" in body
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_every_install_hint_names_the_distribution() -> None:
    # `pip install prun` or 'prun[ws]' would install an unrelated project of that name.
    stale = re.compile(r"(?<![\w.-])prun\[|pip install (?:-\S+ )*'?prun(?![\w-])")
    files = [ROOT / "README.md", *ROOT.glob("examples/**/*"), *ROOT.glob("cluster/**/*.py"),
             *ROOT.glob("runtime/**/*.py")]
    found = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in files if path.is_file()
             for line in path.read_text(errors="replace").splitlines() if stale.search(line)]
    assert found == []


def test_prun_from_the_repository_root_reports_the_missing_module(prun) -> None:
    master = prun("nosuchmodule:app", "-b", "127.0.0.1:0", cwd=ROOT)
    assert master.wait_exit(10) == 3
    errors = [line for line in master.output.splitlines() if line.startswith("prun: error:")]
    assert errors == [line for line in errors if "cannot import 'nosuchmodule'" in line] and len(errors) == 1
