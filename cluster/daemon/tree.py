"""The whole process tree of one app: finding it, stopping it, and keeping children tied to it.

An app's master (or fork-mode supervisor) is started by the daemon in a new session, so it leads a process
group (pgid = its pid) that its descendants normally stay in. Some leave it (setsid, a double fork, a
daemonizing helper) and, once the master is SIGKILLed, are reparented to init. Three marks find them all:

- the token: the daemon puts environment(new_token()) in the master's environment; every descendant
  inherits it (read back from /proc/PID/environ), whatever its group or parent, unless it clears its
  environment;
- the process group `pgid` (what a descendant that cleared its environment usually still has);
- optionally a cgroup v2 group (cgroup.py), which no process can leave: where `Cgroup.create` gave one.

A member is a live process (not a zombie) of the caller's own user (real and effective uid) that carries
the token, or is in the group, or is in the cgroup; never the caller itself, init or a kernel thread. A
process of another user is never signalled, whatever it carries; nor is one without any of the marks. The
daemon, the listener holder and the log writer carry none of them. Signals go through a pidfd opened before
the process is checked, so a pid reused meanwhile is never signalled.

    token = new_token()                                   # kept with the app's state, like its pid
    env.update(environment(token)); Popen(argv, env=env, start_new_session=True)   # pgid = master pid
    members(token, pgid)                                  # -> [pid, ...]
    killed = await stop_tree(token, pgid, signal.SIGTERM, grace=5.0)   # TERM all, KILL what is left
    kill_tree(token, pgid)                                # SIGKILL all now (sync)

Children that must not outlive their parent (fork-mode instances and their supervisor):

    Popen(argv, preexec_fn=die_with_parent())             # single-threaded parents only (the fork-mode
                                                          # supervisor: one asyncio thread, no executor)
    Popen(with_parent_death(argv))                        # any parent: a tiny exec wrapper, no preexec_fn
    prun.cluster.supervision.become_subreaper()           # the supervisor adopts its instances' orphans...
    reap_adopted(own_pids)                                # ...and reaps the ones that exit (on SIGCHLD)

PR_SET_PDEATHSIG covers only the direct child (the kernel clears it at fork, and at exec of a set-user-ID
program); its own descendants are the subreaper's, then stop_tree's.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import sys
from collections.abc import Callable, Container
from dataclasses import dataclass

from prun.cluster.daemon.cgroup import Cgroup

TOKEN_VARIABLE = "PRUN_APP_TOKEN"
POLL_INTERVAL = 0.05  # seconds between two looks at what is left, while stopping
KILL_WAIT = 2.0  # after SIGKILL, how long stop_tree waits for the killed to be gone
KILL_ROUNDS = 5  # SIGKILL passes: a process forked while the last pass ran is taken by the next
PR_SET_PDEATHSIG = 1
PF_KTHREAD = 0x00200000


def new_token() -> str:
    """A fresh app token (128 random bits, hex)."""
    return secrets.token_hex(16)


def environment(token: str) -> dict[str, str]:
    """The variables that mark a master (and all it starts) as the app's: the token, and SPT_NOENV.

    setproctitle (which the master, its workers and the fork-mode supervisor call) otherwise overwrites the
    memory /proc/PID/environ shows, so the token of a prun process, and of every child it forks without
    exec (a daemonizing helper), could not be read back. With SPT_NOENV=1 it leaves it alone; a title is
    then cut at the length of the process's command line, and an app's own setproctitle is too.
    """
    return {TOKEN_VARIABLE: token, "SPT_NOENV": "1"}


@dataclass(frozen=True)
class Member:
    """One process of an app: its pid and start time (clock ticks after boot), which together name it for ever."""

    pid: int
    started: int


@dataclass(frozen=True)
class _Stat:
    state: str
    ppid: int
    pgid: int
    flags: int
    started: int


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _stat(pid: int) -> _Stat | None:
    """The fields of /proc/PID/stat that matter here (None: gone)."""
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    fields = data[data.rfind(b")") + 2:].split()  # after the command name, which may hold spaces and ')'
    try:
        return _Stat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[6]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _same_user(pid: int, uid: int) -> bool:
    """Whether `pid`'s real and effective uids are both `uid` (/proc/PID/status)."""
    data = _read(f"/proc/{pid}/status")
    if data is None:
        return False
    for line in data.splitlines():
        if line.startswith(b"Uid:"):
            real, effective = line.split()[1:3]
            return int(real) == uid and int(effective) == uid
    return False


def _carries(pid: int, needle: bytes) -> bool:
    """Whether `pid`'s environment holds the entry `needle` (b'\\0NAME=value\\0'); False if unreadable."""
    data = _read(f"/proc/{pid}/environ")
    return data is not None and needle in b"\0" + data + b"\0"


class _Marks:
    """What makes a process a member of one app's tree."""

    def __init__(self, token: str, pgid: int, cgroup: Cgroup | None) -> None:
        self.needle = f"\0{TOKEN_VARIABLE}={token}\0".encode() if token else b""
        self.pgid = pgid if pgid > 1 else 0
        self.cgroup = cgroup
        self.uid = os.geteuid()
        self.excluded = {0, 1, os.getpid()}

    def _member(self, pid: int, in_cgroup: set[int]) -> Member | None:
        stat = _stat(pid)
        if (stat is None or stat.state in ("Z", "X", "x") or stat.flags & PF_KTHREAD
                or pid in self.excluded or not _same_user(pid, self.uid)):
            return None
        if (self.pgid and stat.pgid == self.pgid) or pid in in_cgroup or (self.needle and _carries(pid, self.needle)):
            return Member(pid, stat.started)
        return None

    def scan(self) -> dict[int, Member]:
        """Every live member now, by pid."""
        in_cgroup = set(self.cgroup.procs()) if self.cgroup is not None else set()
        found: dict[int, Member] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                member = self._member(int(name), in_cgroup)
                if member is not None:
                    found[member.pid] = member
        return found

    def still(self, member: Member) -> bool:
        """Whether `member` is still that very process, alive and ours (checked after its pidfd was opened)."""
        stat = _stat(member.pid)
        return (stat is not None and stat.started == member.started and stat.state not in ("Z", "X", "x")
                and _same_user(member.pid, self.uid))

    def send(self, member: Member, signum: int) -> bool:
        """Signal `member` if it is still that process; whether it was signalled."""
        try:
            pidfd = os.pidfd_open(member.pid)
        except ProcessLookupError:
            return False
        except OSError:  # no pidfd (Linux < 5.3): the check and the kill are a moment apart
            if not self.still(member):
                return False
            try:
                os.kill(member.pid, signum)
                return True
            except OSError:
                return False
        try:
            if not self.still(member):
                return False
            signal.pidfd_send_signal(pidfd, signum)
            return True
        except OSError:  # gone meanwhile (ESRCH), or not ours after all (EPERM)
            return False
        finally:
            os.close(pidfd)

    def cgroup_is_all_ours(self, found: dict[int, Member]) -> bool:
        """Whether cgroup.kill would signal only members (no process of another user, not the caller)."""
        if self.cgroup is None:
            return False
        return all(pid in found or _stat(pid) is None for pid in self.cgroup.procs())


def members(token: str, pgid: int, cgroup: Cgroup | None = None) -> list[int]:
    """The live pids of the app: of this user, carrying `token`, or in process group `pgid`, or in `cgroup`.

    token "" matches on the group (and cgroup) alone (a master started before tokens); pgid <= 1 on the
    token alone.
    """
    return sorted(_Marks(token, pgid, cgroup).scan())


def kill_tree(token: str, pgid: int, cgroup: Cgroup | None = None) -> list[int]:
    """SIGKILL every member now (the cgroup at once with cgroup.kill where it is all ours); the pids killed.

    It does not wait for them to be gone (SIGKILL is not delayed; a process in uninterruptible sleep may be).
    """
    return _kill(_Marks(token, pgid, cgroup))


def _kill(marks: _Marks) -> list[int]:
    killed: set[Member] = set()
    for _ in range(KILL_ROUNDS):
        found = marks.scan()
        fresh = [member for member in found.values() if member not in killed]
        if not fresh:
            break
        if marks.cgroup is not None and marks.cgroup_is_all_ours(found):
            in_cgroup = set(marks.cgroup.procs())  # (read before: the killed leave it at once)
            if marks.cgroup.kill():
                killed.update(member for member in fresh if member.pid in in_cgroup)
        for member in fresh:
            if member not in killed and marks.send(member, signal.SIGKILL):
                killed.add(member)
    return sorted({member.pid for member in killed})


async def stop_tree(token: str, pgid: int, sig: int = signal.SIGTERM, grace: float = 5.0,
                    cgroup: Cgroup | None = None) -> list[int]:
    """Stop the whole tree: `sig` to every member (and to any that appears meanwhile), a look every 50 ms
    until none is left or `grace` s passed, then SIGKILL to what is left; the pids it had to kill.

    Never blocks the loop (a /proc scan per look). When it returns, the killed are gone too (or
    KILL_WAIT passed: a process stuck in the kernel dies when it leaves it).
    """
    loop = asyncio.get_running_loop()
    marks = _Marks(token, pgid, cgroup)
    told: set[Member] = set()
    deadline = loop.time() + grace
    while True:
        found = marks.scan()
        if not found:
            return []
        for member in found.values():
            if member not in told:
                marks.send(member, sig)
                told.add(member)
        if loop.time() >= deadline:
            break
        await asyncio.sleep(POLL_INTERVAL)
    killed = _kill(marks)
    gone_by = loop.time() + KILL_WAIT
    while killed and loop.time() < gone_by and marks.scan():
        await asyncio.sleep(POLL_INTERVAL)
    return killed


def groups(pgids: Container[int]) -> dict[int, list[int]]:
    """The live processes of each of these process groups, by pgid (one look at /proc; zombies left out)."""
    found: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and stat.pgid in pgids and stat.state not in ("Z", "X", "x"):
                found.setdefault(stat.pgid, []).append(int(name))
    return found


def group_alive(pgid: int) -> bool:
    """Whether process group `pgid` still has a process (a zombie not yet reaped counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (set-user-ID): it is there
        return True
    return True


# ---- children that die with their parent --------------------------------------------------------------


def die_with_parent(signum: int = signal.SIGKILL, new_group: bool = False) -> Callable[[], None]:
    """A preexec_fn for Popen: the child gets `signum` when the process starting it dies (PR_SET_PDEATHSIG),
    and at once if that happened already; with `new_group`, it leads a process group of its own (what Popen's
    process_group=0 does from Python 3.11 on).

    For single-threaded parents only (preexec_fn runs Python between fork and exec, where a lock another
    thread held stays locked): the fork-mode supervisor qualifies, the daemon does not (with_parent_death).
    It fires when the parent *thread* that forked exits: call Popen from the main thread.
    """
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child

    def preexec() -> None:
        if new_group:
            os.setpgid(0, 0)
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return preexec


# The wrapper: a bare interpreter (-I -S: no site, no user paths, a few ms) that sets PR_SET_PDEATHSIG and
# execs the command, keeping its pid. argv: PARENT SIGNAL COMMAND [ARG]...
_WRAPPER = """\
import ctypes, os, sys
parent, signum, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
ctypes.CDLL(None).prctl(1, signum, 0, 0, 0)
if os.getppid() != parent:
    os.kill(os.getpid(), signum)
try:
    os.execvp(argv[0], argv)
except OSError as exc:
    sys.stderr.write(f"prun: cannot start {argv[0]}: {exc.strerror}\\n")
    os._exit(127)
"""


def with_parent_death(argv: list[str], signum: int = signal.SIGKILL) -> list[str]:
    """`argv` wrapped so that it gets `signum` when this process dies: for Popen in any process, threaded
    or not (no preexec_fn). Build it in the process that starts it. Its pid is argv's; a command that
    cannot be run exits 127 with one line on stderr (Popen itself no longer raises for it)."""
    return [sys.executable, "-I", "-S", "-c", _WRAPPER, str(os.getpid()), str(int(signum)), *argv]


def reap_adopted(own: Container[int]) -> list[tuple[int, int]]:
    """Reap the exited children of this process that are not in `own` (orphans a subreaper adopted), leaving
    `own`'s statuses to whoever waits for them; (pid, exit code as Popen.returncode) of each reaped."""
    me = os.getpid()
    reaped = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in own:
            continue
        stat = _stat(int(name))
        if stat is None or stat.ppid != me or stat.state != "Z":
            continue
        try:
            pid, status = os.waitpid(int(name), os.WNOHANG)
        except ChildProcessError:
            continue
        if pid:
            reaped.append((pid, os.waitstatus_to_exitcode(status)))
    return reaped
