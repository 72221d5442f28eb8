"""The process groups of a fork-mode supervisor's instances, ended as PM2 ends an app: the kill signal, then
SIGKILL after --kill-timeout, to the whole group.

Each instance leads a process group of its own (a shell and what it runs, together). The group outlives its
leader while something it started is still in it: a child that ignores the kill signal, or one that an
instance which crashed or finished left behind. Those are ended the same way, and a stop is over once every
group is empty.

    groups = Groups(loop, signal.SIGINT, timeout=5.0)
    groups.end(pgid)      # the kill signal to the group now; SIGKILL to what is left of it `timeout` s later
    groups.kill()         # SIGKILL now to every group being ended (a second stop signal)
    groups.left()         # how many of them still have a process (the empty ones are forgotten)
    groups.forget(pid)    # a new instance got that pid: the old group of that id is gone
    memory([pgid, ...])   # the resident bytes of each group, for --max-memory-restart

A group id is not given to a new process while the group has a member; a group found empty is forgotten
(looked at every 0.25 s, and the supervisor forgets an id it gets for a new instance), so the signals go to
the group's own processes, not to a stranger that got its id later.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Collection

from prun.cluster.daemon.tree import group_alive, groups
from prun.cluster.metrics import rss

KILL_WAIT = 2.0  # after SIGKILL, how long a group that still shows a process is waited for
PRUNE_INTERVAL = 0.25  # seconds between two looks for groups that emptied


class Groups:
    def __init__(self, loop: asyncio.AbstractEventLoop, signum: int, timeout: float) -> None:
        self.loop = loop
        self.signum = signum
        self.timeout = timeout
        self.ending: dict[int, asyncio.TimerHandle] = {}  # pgid -> its SIGKILL (then: forgetting it)
        self.pruning: asyncio.TimerHandle | None = None

    def end(self, pgid: int) -> None:
        """The kill signal to group `pgid` (if anything is left in it), SIGKILL to the rest after the timeout."""
        if pgid in self.ending or not group_alive(pgid):
            return
        _killpg(pgid, self.signum)
        self.ending[pgid] = self.loop.call_later(self.timeout, self._kill, pgid)
        if self.pruning is None:
            self.pruning = self.loop.call_later(PRUNE_INTERVAL, self._prune)

    def _prune(self) -> None:
        self.pruning = self.loop.call_later(PRUNE_INTERVAL, self._prune) if self.left() else None

    def _kill(self, pgid: int) -> None:
        if not group_alive(pgid):
            self.ending.pop(pgid, None)
            return
        _killpg(pgid, signal.SIGKILL)
        self.ending[pgid] = self.loop.call_later(KILL_WAIT, self.ending.pop, pgid, None)

    def kill(self) -> None:
        for pgid, timer in list(self.ending.items()):
            timer.cancel()
            self._kill(pgid)

    def forget(self, pgid: int) -> None:
        """A new process got the id `pgid`: the group of that id that was being ended is empty (a pid is never
        given while a group holds it), and the new one is not to be signalled."""
        timer = self.ending.pop(pgid, None)
        if timer is not None:
            timer.cancel()

    def left(self) -> int:
        for pgid in [pgid for pgid in self.ending if not group_alive(pgid)]:
            self.ending.pop(pgid).cancel()
        return len(self.ending)


def memory(pgids: Collection[int]) -> dict[int, int]:
    """The resident bytes of each process group (0 for one with no process left)."""
    members = groups(set(pgids))
    return {pgid: sum(rss(pid) for pid in members.get(pgid, ())) for pgid in pgids}


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
