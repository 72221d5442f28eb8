"""A cgroup v2 group for one app, where prun may make one: the one membership a process cannot leave.

A process can leave its process group (setsid) and clear its environment, but not its cgroup (only a
process allowed to write another group's `cgroup.procs` can move, in practice root or a delegated
manager). So where the daemon may create groups (root, or a delegated subtree), each app gets one,
below the daemon's own: `<the daemon's cgroup>/prun-<token>`, and `tree.py` counts every process in it
as the app's, and ends them all at once with `cgroup.kill` (Linux 5.14+), forks in flight included.
Nothing requires it: `Cgroup.create` says None where cgroup v2 is not mounted or not writable, and the
process group and the environment token (tree.py) find the app's processes without it.

    group = Cgroup.create(f"prun-{token}")          # None: no cgroup here, fine
    argv = group.command(argv) if group else argv   # the master joins it before it runs (pid unchanged)
    ...                                             # stop: tree.stop_tree(token, pgid, cgroup=group)
    group.remove()                                  # once empty (its path is kept with the app's state)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prun.cluster.cpus import cgroup_mounts

PREFIX = "prun-"

# `sh -c SCRIPT PROCS ARGV...`: writes its own pid into PROCS ("$0"), then becomes ARGV (same pid, same
# session): the master is in the group before it runs a line, without a preexec_fn in a threaded daemon.
# A failed write is silent: the group is a help, never a requirement.
_JOIN = '{ echo $$ > "$0"; } 2>/dev/null; exec "$@"'


@dataclass(frozen=True)
class Cgroup:
    """One cgroup v2 directory (e.g. /sys/fs/cgroup/unified/prun-1f2e...)."""

    path: str

    @classmethod
    def create(cls, name: str) -> Cgroup | None:
        """The group `name` below this process's own (made, or found from a previous daemon); None if
        cgroup v2 is not usable here (not mounted, read-only, not delegated to this user)."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a cgroup name: {name!r}")
        parent = own_group()
        if parent is None:
            return None
        path = os.path.join(parent, name)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass
        except OSError:
            return None
        group = cls(path)
        if not os.access(group.file("cgroup.procs"), os.W_OK):
            group.remove()
            return None
        return group

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def command(self, argv: list[str]) -> list[str]:
        """`argv`, run so that it joins this group before it starts (for Popen; its pid is argv's)."""
        return ["/bin/sh", "-c", _JOIN, self.file("cgroup.procs"), *argv]

    def add(self, pid: int) -> bool:
        """Move `pid` into the group (its later children are born in it); False if that was refused."""
        try:
            with open(self.file("cgroup.procs"), "w") as procs:
                procs.write(str(pid))
            return True
        except OSError:
            return False

    def procs(self) -> list[int]:
        """The pids in the group and the groups below it (zombies are not listed: they left at exit)."""
        found: list[int] = []
        for directory, _, files in os.walk(self.path):
            if "cgroup.procs" not in files:
                continue
            try:
                with open(os.path.join(directory, "cgroup.procs")) as procs:
                    found.extend(int(line) for line in procs if line.strip())
            except (OSError, ValueError):
                continue
        return found

    def kill(self) -> bool:
        """SIGKILL every process in the group and below at once (cgroup.kill); False where the kernel has
        no cgroup.kill (before 5.14) or the group is gone."""
        try:
            with open(self.file("cgroup.kill"), "w") as kill:
                kill.write("1")
            return True
        except OSError:
            return False

    def remove(self) -> bool:
        """Remove the group (and the groups below it); False while a process is still in one."""
        for directory, _, _ in sorted(os.walk(self.path), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError:
                return False
        return True


def own_group() -> str | None:
    """The directory of this process's cgroup v2 group, or None (no cgroup v2 mounted, or not ours)."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    root, point = mount
    try:
        with open("/proc/self/cgroup") as own:
            line = next((entry for entry in own if entry.startswith("0::")), "")
    except OSError:
        return None
    path = line[3:].strip()
    if not path.startswith("/") or path.endswith(" (deleted)"):
        return None
    if root != "/":  # a mount of a subtree: our path is below its root
        if not (path == root or path.startswith(root + "/")):
            return None
        path = path[len(root):] or "/"
    directory = os.path.normpath(point + path)
    return directory if os.path.isdir(directory) else None


def _cgroup2_mount() -> tuple[str, str] | None:
    """(root within the hierarchy, mount point) of the first cgroup2 mount (/proc/self/mountinfo)."""
    return next(((m.root, m.point) for m in cgroup_mounts() if m.fstype == "cgroup2"), None)
