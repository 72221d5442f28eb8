"""The restart policy of a master under the daemon, from the options `prun start` was given (PM2's names).

    --max-restarts N        give up after N unstable restarts in a row (0: never); the app is errored
    --min-uptime MS         a master that exits sooner than this after it started, or that never came
                            online, is unstable
    --restart-delay MS      a fixed delay before each restart (0: the backoff below)
    --exp-backoff-restart-delay MS   the backoff's first delay (x1.5, at most 15 s, reset after 30 s up)

The same options set the master's own policy for its workers (cluster/supervision.py): one table of
options (cluster/options.py), read here from the spec's run_args.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

NAMES = ("max_restarts", "min_uptime", "restart_delay", "exp_backoff_restart_delay")


@dataclass(frozen=True)
class Policy:
    max_restarts: int
    min_uptime: float
    restart_delay: float
    exp_backoff_restart_delay: float

    @classmethod
    def from_run_args(cls, run_args: list[str]) -> Policy:
        """The policy in `prun run` arguments (each option's default where it is not given); parsed once per
        set of arguments (the daemon asks at every exit of an app's master)."""
        return _parsed(tuple(run_args))

    def delay(self, failures: int) -> float:
        from prun.cluster.supervision import restart_delay

        return restart_delay(self.restart_delay, self.exp_backoff_restart_delay, failures)

    def gives_up(self, unstable: int) -> bool:
        return bool(self.max_restarts) and unstable > self.max_restarts


@functools.lru_cache(maxsize=256)
def _parsed(run_args: tuple[str, ...]) -> Policy:
    from prun.cluster.options import values_in

    return Policy(**values_in(list(run_args), NAMES))
