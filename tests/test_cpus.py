"""-i max in a container: one worker per CPU prun may use, the cgroup CPU quota included (cluster/cpus.py).

The real tests make a cgroup with a quota of half a CPU (v2 `cpu.max`, and v1 `cpu.cfs_quota_us` where the
cpu controller is a v1 hierarchy), start prun in a group below it with `-i max`, and count its workers. The
others read made-up /proc and cgroup trees, for the layouts this machine does not have.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prun.cluster.cpus import Mount, cgroup_cpu_limit, cgroup_mounts, cpu_count
from tests.support import prun_command, running, wait_until

# ---- made-up trees -----------------------------------------------------------------------------------


def fake_proc(tmp_path: Path, mount_line: str, cgroup_line: str) -> str:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text("22 1 0:21 / /proc rw - proc proc rw\n" + mount_line + "\n")
    (proc / "cgroup").write_text(cgroup_line + "\n")
    return str(proc)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_v2_the_strictest_quota_from_the_group_up_counts_rounded_up(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    proc = fake_proc(tmp_path, f"30 23 0:26 / {cg} rw,nosuid - cgroup2 cgroup2 rw", "0::/kubepods/pod1/ctr")
    write(cg / "kubepods" / "cpu.max", "max 100000")
    write(cg / "kubepods" / "pod1" / "cpu.max", "150000 100000")  # 1.5 CPUs: 2 workers
    write(cg / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000")
    assert cgroup_cpu_limit(proc) == 2
    write(cg / "kubepods" / "pod1" / "ctr" / "cpu.max", "20000 100000")  # a fifth of a CPU: still one worker
    assert cgroup_cpu_limit(proc) == 1
    write(cg / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000")
    write(cg / "kubepods" / "pod1" / "cpu.max", "max 100000")
    assert cgroup_cpu_limit(proc) is None


def test_v2_in_a_cgroup_namespace_the_mount_is_the_container_group(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    # The container sees its own group as the mount's root ("/" in /proc/self/cgroup, or the host's path).
    proc = fake_proc(tmp_path, f"30 23 0:26 / {cg} rw - cgroup2 cgroup2 rw", "0::/")
    write(cg / "cpu.max", "300000 100000")
    assert cgroup_cpu_limit(proc) == 3
    proc2 = tmp_path / "other"
    proc2.mkdir()
    (proc2 / "mountinfo").write_text(f"30 23 0:26 /docker/abc {cg} rw - cgroup2 cgroup2 rw\n")
    (proc2 / "cgroup").write_text("0::/docker/abc\n")
    assert cgroup_cpu_limit(str(proc2)) == 3
    (proc2 / "cgroup").write_text("0::/docker/elsewhere\n")  # not below what is mounted: nothing to read
    assert cgroup_cpu_limit(str(proc2)) is None


def test_v1_cfs_quota_over_period_with_cpu_and_cpuacct_together(tmp_path: Path) -> None:
    cg = tmp_path / "cpu,cpuacct"
    proc = fake_proc(tmp_path, f"33 25 0:29 / {cg} rw - cgroup cgroup rw,cpu,cpuacct",
                     "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc")
    write(cg / "docker" / "abc" / "cpu.cfs_quota_us", "250000")
    write(cg / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    assert cgroup_cpu_limit(proc) == 3
    write(cg / "docker" / "abc" / "cpu.cfs_quota_us", "-1")
    assert cgroup_cpu_limit(proc) is None


def test_no_cgroup_files_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(str(tmp_path / "nowhere")) is None
    proc = fake_proc(tmp_path, f"30 23 0:26 / {tmp_path / 'cg'} rw - cgroup2 cgroup2 rw", "0::/a/b")
    assert cgroup_cpu_limit(proc) is None  # the files are not there (no cpu controller)


def test_a_mount_point_with_a_space_is_unescaped(tmp_path: Path) -> None:
    cg = tmp_path / "c g"
    proc = fake_proc(tmp_path, f"30 23 0:26 / {tmp_path}/c\\040g rw - cgroup2 cgroup2 rw", "0::/")
    write(cg / "cpu.max", "100000 100000")
    assert cgroup_cpu_limit(proc) == 1


# ---- a real cgroup -------------------------------------------------------------------------------------


def cgroup_mount(version: str) -> Mount | None:
    for mount in cgroup_mounts("/proc/self/mountinfo"):
        if version == "v2" and mount.fstype == "cgroup2":
            return mount
        if version == "v1" and mount.fstype == "cgroup" and "cpu" in mount.options:
            return mount
    return None


@contextmanager
def half_a_cpu(version: str) -> Iterator[Path]:
    """A new group with a quota of half a CPU and an empty group below it; that inner group's directory."""
    mount = cgroup_mount(version)
    if mount is None:
        pytest.skip(f"no cgroup {version} {'cpu hierarchy ' if version == 'v1' else ''}mounted here")
    parent = Path(mount.point)
    if version == "v2":
        if "cpu" not in (parent / "cgroup.controllers").read_text().split():
            pytest.skip(f"the cpu controller is not in the cgroup v2 hierarchy at {parent} (it is bound to a cgroup v1 "
                        "hierarchy: a hybrid setup)")
        if "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
            try:
                (parent / "cgroup.subtree_control").write_text("+cpu")
            except OSError as exc:
                pytest.skip(f"may not enable the cpu controller below {parent}: {exc.strerror}")
    outer = parent / f"prun-test-{secrets.token_hex(4)}"
    try:
        outer.mkdir()
    except OSError as exc:
        pytest.skip(f"may not create a cgroup in {parent} (root or a delegated cgroup is needed): {exc.strerror}")
    inner = outer / "app"
    try:
        if version == "v2":
            (outer / "cpu.max").write_text("50000 100000")
        else:
            (outer / "cpu.cfs_period_us").write_text("100000")
            (outer / "cpu.cfs_quota_us").write_text("50000")
        inner.mkdir()
        yield inner
    finally:
        for group in (inner, outer):
            if group.exists():
                wait_until(lambda g=group: not (g / "cgroup.procs").read_text().strip(), what=f"{group} empty")
                wait_until(lambda g=group: _rmdir(g), what=f"{group} removed")


def _rmdir(group: Path) -> bool:
    try:
        group.rmdir()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_instances_max_in_a_cgroup_with_half_a_cpu_starts_one_worker(version: str) -> None:
    if cpu_count() < 2:
        pytest.skip("prun may use one CPU here already: a quota of half a CPU could not lower -i max")
    with half_a_cpu(version) as group:
        # The master joins the group before it starts (same pid), and its workers are born in it.
        join = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(group / "cgroup.procs"), *prun_command()]
        with running("tcp:handle", "-i", "max", "-b", "127.0.0.1:0", command=join) as master:
            master.wait_ready()
            assert master.wait_for(r"ready: (\d+) workers?\b").group(1) == "1"
            assert str(master.pid) in (group / "cgroup.procs").read_text().split()
            assert len(master.workers()) == 1
