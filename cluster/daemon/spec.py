"""Spec: what `prun start` was given for an app, each of its fields a row of the schema (schema.py).

PROTOCOL.md's table of the fields is generated from the rows: `python -m prun.cluster.daemon.spec [PATH]`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prun.cluster import names
from prun.cluster.daemon import schema
from prun.cluster.daemon.schema import BOOLEAN, INSTANCES, INTEGER, NUMBER, STRING, STRINGS, VARIABLES, declare


def daemon_options() -> tuple[str, ...]:
    """The `prun run` options the daemon reads itself (its log writer's): never among a spec's run_args."""
    return schema.daemon_options(Spec)


def _run_args(args: list[str]) -> None:
    schema.run_args(args, (*schema.CARRIED, *daemon_options()))


@dataclass
class Spec:
    """What `prun start` was given: all a restart, a dump and a resurrect need (no shell environment).

    Each field is a row of the schema (schema.py: its JSON type, its default, its check); a Spec is only
    made by `Spec.parse`, so every spec the daemon holds was checked, wherever it came from.
    """

    name: str = declare(STRING, f"The app's name, in `prun ls` and in its log files' names: {names.RULE}.",
                        checks=(names.check,))
    target: str = declare(STRING, "MODULE:ATTR in cluster mode; the command or script as given in fork mode.",
                          checks=(schema.not_empty,))
    mode: str = declare(STRING, "`cluster` (a master and its workers) or `fork` (a command under a supervisor).",
                        checks=(schema.one_of(*schema.MODES),))
    cwd: str = declare(STRING, "The directory the app runs in, absolute.", checks=(schema.absolute,))
    namespace: str = declare(STRING, "A group of apps commands can name at once; the rule of names.",
                             default="default", checks=(names.check,))
    instances: str = declare(INSTANCES, "Workers (fork mode: copies of the command): N, `max`, or -N.",
                             option="instances")
    run_args: list[str] = declare(STRINGS, "The master's options of `prun run`, as arguments (none of those "
                                  "this table holds).", default=[], checks=(_run_args,))
    bind: list[str] = declare(STRINGS, "What the daemon binds for the app: HOST:PORT, [::]:PORT or unix:PATH "
                              "(absolute).", option="bind", option_parses=False, fork_default=[],
                              checks=(schema.binds,))
    backlog: int = declare(INTEGER, "The listen backlog of those sockets.", option="backlog",
                           checks=(schema.at_most(schema.MAX_BACKLOG),))
    graceful_timeout: float = declare(NUMBER, "Cluster mode: seconds a draining worker may take. Fork mode: "
                                      "seconds from TERM to KILL of an instance (PM2's kill_timeout; at most 30 "
                                      "are used).", option="graceful_timeout",
                                      fork_default=schema.FORK_KILL_TIMEOUT)
    command: list[str] = declare(STRINGS, "Fork mode: the argument vector of each instance.", default=[])
    env: dict[str, str] = declare(VARIABLES, "The variables declared with --env (never the caller's "
                                  "environment).", default={}, checks=(schema.variables,))
    autorestart: bool = declare(BOOLEAN, "Replace what exits unasked: a worker or instance, and the master "
                                "(false: --no-autorestart).", option="autorestart")
    log_file: str = declare(STRING, "The out log, absolute; `\"\"`: $PRUN_HOME/logs/NAME-out.log.",
                            option="log_file", daemon=True, checks=(schema.absolute_or_empty,))
    error_file: str = declare(STRING, "The err log, absolute; `\"\"`: log_file if given, else "
                              "$PRUN_HOME/logs/NAME-err.log.", option="error_file", daemon=True,
                              checks=(schema.absolute_or_empty,))
    combined_file: str = declare(STRING, "A third log holding every line of both, absolute (PM2's -l/--log); "
                                 "`\"\"`: none.", default="", daemon=True, checks=(schema.absolute_or_empty,))
    log_max_size: int = declare(INTEGER, "Bytes a log file may reach before it rotates (0: never).",
                                option="log_max_size", daemon=True)
    log_retain: int = declare(INTEGER, "Rotated files kept per log file.", option="log_retain", daemon=True)
    log_compress: bool = declare(BOOLEAN, "Gzip the rotated files but the newest.", option="log_compress",
                                 daemon=True)
    log_rotate_daily: bool = declare(BOOLEAN, "Also rotate when the day changes.", option="log_rotate_daily",
                                     daemon=True)
    log_time: str = declare(STRING, "The strftime format each line is prefixed with (--time, "
                            "--log-date-format); `\"\"`: none.", default="", daemon=True, checks=(schema.one_line,))
    merge_logs: bool = declare(BOOLEAN, "false: a pair of log files per worker (NAME-out-0.log, ...).",
                               option="merge_logs")

    @classmethod
    def parse(cls, data: Any, where: str, ignore_unknown: Callable[[str], None] | None = None) -> Spec:
        """The spec in a JSON object from `where` (named in errors); SpecError if it does not fit the schema."""
        return schema.build(cls, data, where, ignore_unknown)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spec:
        return cls.parse(data, "an app record")


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(__file__), "PROTOCOL.md")
    print("updated" if schema.update_protocol(sys.argv[1] if len(sys.argv) > 1 else default, Spec) else "up to date")
