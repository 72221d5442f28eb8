"""How many CPUs prun may use, for `-i max` and `-i -N`: the affinity mask or the cgroup CPU quota, the smaller.

In a container the host's CPU count is the wrong answer. `docker run --cpus 2` and a Kubernetes CPU limit set
a CFS quota on the container's cgroup (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`);
`--cpuset-cpus` narrows the affinity mask. A quota is rounded up (1.5 CPUs: 2 workers), and the strictest
quota between this process's group and its hierarchy's root counts (a limit may sit on a parent group).
Without a cgroup, or where its files cannot be read, the affinity mask alone decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def cpu_count() -> int:
    """CPUs this process may use: its affinity mask, lowered to its cgroup CPU quota if it has one."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        allowed = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return max(1, min(allowed, quota)) if quota is not None else allowed


@dataclass(frozen=True)
class Mount:
    """A cgroup hierarchy, or one group of it, mounted at `point` (a line of /proc/self/mountinfo)."""

    root: str  # the group mounted here: "/" for a whole hierarchy, a group's path where only that group is
    point: str
    fstype: str  # cgroup2, or cgroup (v1)
    options: frozenset[str]  # v1: the controllers of this hierarchy (cpu, cpuacct, ...)


def cgroup_cpu_limit(proc: str = "/proc/self") -> int | None:
    """The CPU quota of the process `proc` describes, in whole CPUs rounded up; None if none is set."""
    mounts = cgroup_mounts(os.path.join(proc, "mountinfo"))
    limits: list[int] = []
    try:
        with open(os.path.join(proc, "cgroup")) as groups:
            entries = [line.rstrip("\n").split(":", 2) for line in groups]
    except OSError:
        return None
    for entry in entries:
        if len(entry) != 3:
            continue
        _, controllers, path = entry
        if controllers == "":  # cgroup v2: the unified hierarchy
            mount = next((m for m in mounts if m.fstype == "cgroup2"), None)
            read = _v2_quota
        elif "cpu" in controllers.split(","):
            mount = next((m for m in mounts if m.fstype == "cgroup" and "cpu" in m.options), None)
            read = _v1_quota
        else:
            continue
        if mount is not None:
            limits.extend(q for q in map(read, _groups_up(mount, path)) if q is not None)
    return min(limits) if limits else None


def _groups_up(mount: Mount, path: str) -> list[str]:
    """The directories of the group at `path` and of each parent up to the mount point."""
    if mount.root != "/":
        if not (path == mount.root or path.startswith(mount.root.rstrip("/") + "/")):
            return []  # a group outside what is mounted here: nothing of it to read
        path = path[len(mount.root.rstrip("/")):]
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:  # a group above this cgroup namespace's root
        return []
    return [os.path.join(mount.point, *parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(directory: str) -> int | None:
    """cpu.max: "max 100000" (no limit) or "QUOTA PERIOD" in microseconds."""
    text = _read(os.path.join(directory, "cpu.max"))
    if text is None:
        return None
    quota, _, period = text.partition(" ")
    return _whole_cpus(quota, period or "100000")


def _v1_quota(directory: str) -> int | None:
    """cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us."""
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    return None if quota is None or period is None else _whole_cpus(quota, period)


def _whole_cpus(quota: str, period: str) -> int | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max"
        return None
    if q <= 0 or p <= 0:
        return None
    return max(1, -(-q // p))


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def cgroup_mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    """The cgroup mounts in a mountinfo file (fields: id parent dev root point options ... - fstype source super)."""
    found: list[Mount] = []
    try:
        with open(path) as mountinfo:
            for line in mountinfo:
                fields, _, rest = line.partition(" - ")
                parts, tail = fields.split(), rest.split()
                if len(parts) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                    continue
                found.append(Mount(_unescape(parts[3]), _unescape(parts[4]), tail[0], frozenset(tail[2].split(","))))
    except OSError:
        pass
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, plain)
    return field
