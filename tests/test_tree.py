"""An app's whole process tree (cluster/daemon/tree.py, cgroup.py), with real processes: what leaves the
group or its parent is still found and stopped; what belongs to another user or carries no mark is not."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from prun.cluster.daemon import tree
from prun.cluster.daemon.cgroup import Cgroup
from tests.support import wait_until

ROOT = os.geteuid() == 0


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def running(pid: int) -> bool:
    return not gone(pid)


def argv_of(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def find(pids: list[int], *argv: str) -> int | None:
    return next((pid for pid in pids if argv_of(pid) == list(argv)), None)


class Started:
    """The processes a test starts, by token and by pid; all SIGKILLed afterwards (found with psutil, not
    with the code under test)."""

    def __init__(self) -> None:
        self.token = tree.new_token()
        self.pids: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, **{tree.TOKEN_VARIABLE: self.token}, **extra)

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        self.pids.append(proc.pid)
        return proc  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        victims = set(self.pids)
        groups = {proc.pid for proc in self.procs}  # those started in a session of their own lead a group
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(tree.TOKEN_VARIABLE) == self.token or os.getpgid(proc.pid) in groups:
                    victims.add(proc.pid)
            except (psutil.Error, OSError):
                continue
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(10)
        wait_until(lambda: all(gone(pid) for pid in victims), what="the test's processes to end")


@pytest.fixture
def started() -> Iterator[Started]:
    instance = Started()
    try:
        yield instance
    finally:
        instance.cleanup()


# the app: one child in the group, one that cleared its environment (in the group), one that left with
# setsid and ignores SIGTERM
APP = ('sleep 77 & env -i /bin/sleep 76 & setsid sh -c "trap \\"\\" TERM; exec sleep 78" & '
       'echo started; wait')


def start_app(started: Started) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    top = started.popen(["sh", "-c", APP], env=started.env(), start_new_session=True, stdout=subprocess.PIPE)
    assert top.stdout is not None and top.stdout.readline() == b"started\n"
    top.stdout.close()

    def all_there() -> dict[str, int] | None:
        pids = tree.members(started.token, top.pid)
        found = {"in_group": find(pids, "sleep", "77"), "no_env": find(pids, "/bin/sleep", "76"),
                 "setsid": find(pids, "sleep", "78")}
        return found if all(found.values()) else None  # type: ignore[return-value]

    return top, wait_until(all_there, what="the app's three children")


def test_after_the_master_is_killed_stop_tree_ends_what_left_its_group_and_what_ignores_sigterm(started):
    top, children = start_app(started)
    assert os.getpgid(children["setsid"]) != top.pid  # it left the group: only the token finds it
    top.kill()
    top.wait()
    wait_until(lambda: all(psutil.Process(pid).ppid() != top.pid for pid in children.values()),
               what="the children to be orphaned")
    assert set(children.values()) <= set(tree.members(started.token, top.pid))

    ticks = 0

    async def stop() -> list[int]:
        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        try:
            return await tree.stop_tree(started.token, top.pid, signal.SIGTERM, grace=0.5)
        finally:
            ticking.cancel()

    killed = asyncio.run(stop())
    assert killed == [children["setsid"]]  # the others ended on SIGTERM
    assert all(gone(pid) for pid in children.values())
    assert ticks >= 20  # the loop ran all along the 0.5 s grace
    assert tree.members(started.token, top.pid) == []


def test_kill_tree_kills_at_once(started):
    top, children = start_app(started)
    killed = tree.kill_tree(started.token, top.pid)
    assert killed == sorted([top.pid, *children.values()])
    top.wait(10)
    wait_until(lambda: all(gone(pid) for pid in children.values()), what="every member to die")


@pytest.mark.skipif(not ROOT, reason="needs root, to run a process as another user")
def test_processes_of_another_user_or_without_any_mark_are_untouched(started):
    nobody = pwd.getpwnam("nobody")
    # the app, whose leader starts a child as nobody: same token, same process group, another user
    script = ("import os, subprocess, sys\n"
              f"p = subprocess.Popen(['sleep', '81'], user={nobody.pw_uid}, group={nobody.pw_gid}, extra_groups=[])\n"
              "print(p.pid, flush=True)\n"
              "os.execvp('sleep', ['sleep', '80'])\n")
    top = started.popen([sys.executable, "-c", script], env=started.env(), start_new_session=True,
                        stdout=subprocess.PIPE)
    assert top.stdout is not None
    other_user = int(top.stdout.readline())
    started.pids.append(other_user)
    assert psutil.Process(other_user).uids().real == nobody.pw_uid
    assert os.getpgid(other_user) == top.pid
    # a process of ours that carries no mark: another token, another group
    stranger = started.popen(["sleep", "82"], env=dict(os.environ, **{tree.TOKEN_VARIABLE: tree.new_token()}),
                             start_new_session=True)
    wait_until(lambda: argv_of(top.pid) == ["sleep", "80"], what="the leader to exec")

    assert tree.members(started.token, top.pid) == [top.pid]
    assert tree.kill_tree(started.token, top.pid) == [top.pid]
    assert asyncio.run(tree.stop_tree(started.token, top.pid, grace=0.2)) == []
    top.wait(10)
    assert running(other_user) and running(stranger.pid)


def test_no_token_and_no_group_find_nothing(started):
    plain = started.popen(["sleep", "83"], start_new_session=True)
    assert tree.members("", 0) == [] and tree.members("", 1) == []
    assert plain.pid not in tree.members(started.token, 0)
    assert tree.kill_tree("", 0) == []
    assert running(plain.pid)


def ask(port: int, command: bytes) -> int:
    """Ask the forks app (tests/apps/forks.py) to start a child; its pid."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(command + b"\n")
        return int(sock.makefile("rb").readline().split()[0])


def test_a_prun_master_marked_by_environment_is_stopped_whole_with_what_its_workers_forked_away(started, prun):
    master = prun("forks:handle", "-i", "2", "-b", "127.0.0.1:0", env=tree.environment(started.token),
                  start_new_session=True)
    started.pids.append(master.pid)
    port = master.wait_ready()
    workers = set(master.workers())
    away = ask(port, b"daemon")  # forked without exec (a title-setting worker's copy), then setsid
    started.pids.append(away)
    wait_until(lambda: os.getsid(away) == away, what="the helper to leave the session")
    assert set(tree.members(started.token, master.pid)) == {master.pid, *workers, away}
    os.kill(master.pid, signal.SIGKILL)
    master.proc.wait(10)
    wait_until(lambda: all(gone(pid) for pid in workers), what="the workers to die with the master")
    assert tree.members(started.token, master.pid) == [away]  # only the token finds it now
    asyncio.run(tree.stop_tree(started.token, master.pid, grace=1.0))
    wait_until(lambda: gone(away), what="the helper to end")


@pytest.fixture
def cgroup(started: Started) -> Iterator[Cgroup]:
    group = Cgroup.create(f"prun-test-{started.token}")
    if group is None:
        pytest.skip("cgroup v2 is not writable here")
    try:
        yield group
    finally:
        started.cleanup()
        wait_until(group.remove, what="the test's cgroup to be removed")


def test_the_cgroup_finds_what_left_both_the_group_and_the_environment(started, cgroup):
    argv = ["sh", "-c", "setsid env -i /bin/sleep 84 & echo started; wait"]
    top = started.popen(cgroup.command(argv), env=started.env(), start_new_session=True, stdout=subprocess.PIPE)
    assert top.stdout is not None and top.stdout.readline() == b"started\n"
    top.stdout.close()
    escaped = wait_until(lambda: find(cgroup.procs(), "/bin/sleep", "84"), what="the escaped sleep")
    started.pids.append(escaped)
    assert top.pid in cgroup.procs()  # the wrapper joined, then became argv under the same pid
    assert escaped not in tree.members(started.token, top.pid)  # no token, another group
    assert set(tree.members(started.token, top.pid, cgroup)) == {top.pid, escaped}
    assert sorted(tree.kill_tree(started.token, top.pid, cgroup)) == sorted([top.pid, escaped])
    top.wait(10)
    wait_until(lambda: gone(escaped) and not cgroup.procs(), what="the cgroup to empty")


@pytest.mark.skipif(not ROOT, reason="needs root, to run a process as another user")
def test_a_cgroup_holding_another_users_process_is_not_killed_whole(started, cgroup):
    nobody = pwd.getpwnam("nobody")
    ours = started.popen(cgroup.command(["sleep", "85"]), env=started.env(), start_new_session=True)
    theirs = started.popen(["sleep", "86"], user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                           start_new_session=True)
    assert cgroup.add(theirs.pid)  # (nobody may not write cgroup.procs itself)
    wait_until(lambda: {ours.pid, theirs.pid} <= set(cgroup.procs()), what="both in the cgroup")
    assert tree.members(started.token, ours.pid, cgroup) == [ours.pid]
    assert asyncio.run(tree.stop_tree(started.token, ours.pid, grace=0.2, cgroup=cgroup)) == []
    ours.wait(10)
    assert running(theirs.pid)


# ---- children that die with their parent ------------------------------------------------------------------

PARENT = """\
import subprocess, sys
from prun.cluster.daemon import tree
argv = ["sleep", "87"]
if sys.argv[1] == "preexec":
    child = subprocess.Popen(argv, preexec_fn=tree.die_with_parent())
else:
    child = subprocess.Popen(tree.with_parent_death(argv))
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.parametrize("how", ["preexec", "wrapper"])
def test_a_child_started_with_parent_death_dies_when_its_parent_is_killed(started, how):
    parent = started.popen([sys.executable, "-c", PARENT, how], env=started.env(), stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    started.pids.append(child)
    wait_until(lambda: argv_of(child) == ["sleep", "87"], what="the child to exec its command")
    parent.kill()
    parent.wait()
    wait_until(lambda: gone(child), what="the child to die with its parent")


def test_the_wrapper_says_in_one_line_that_a_command_cannot_run():
    result = subprocess.run(tree.with_parent_death(["/nonexistent/cmd"]), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 127
    assert result.stderr == "prun: cannot start /nonexistent/cmd: No such file or directory\n"


SUBREAPER = """\
import subprocess, time
from prun.cluster.supervision import become_subreaper
from prun.cluster.daemon import tree
assert become_subreaper()
own = subprocess.Popen(["sh", "-c", "exit 4"])
helper = subprocess.Popen(["sh", "-c", "sleep 89 & echo $!"], stdout=subprocess.PIPE)
orphan = int(helper.stdout.readline())
helper.wait()
print(orphan, flush=True)
reaped = []
while not reaped:  # until the test ends the orphan
    reaped = tree.reap_adopted({own.pid})
    time.sleep(0.01)
print(reaped, own.wait(), flush=True)
"""


def test_a_subreaper_reaps_the_orphans_it_adopted_and_leaves_its_own_children_alone(started):
    supervisor = started.popen([sys.executable, "-c", SUBREAPER], env=started.env(), stdout=subprocess.PIPE)
    assert supervisor.stdout is not None
    orphan = int(supervisor.stdout.readline())
    started.pids.append(orphan)
    assert psutil.Process(orphan).ppid() == supervisor.pid  # adopted, not given to init
    os.kill(orphan, signal.SIGTERM)
    # the orphan reaped by reap_adopted; its own child's status left for Popen.wait
    assert supervisor.stdout.readline() == f"[({orphan}, -15)] 4\n".encode()
    assert supervisor.wait(10) == 0
