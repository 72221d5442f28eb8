"""The `prun` executable: `prun ls` answered on a short path (no click, no option table), the rest by cli.py.

`prun ls` (and its aliases: list, status, ps, jlist) is what people and monitoring scripts run most; with a running daemon it costs an interpreter
start, a socket round trip and the table, well under 100 ms (benchmarks/results/daemon-ls.md).
"""

from __future__ import annotations

import sys

FAST = (["ls"], ["ls", "--json"])


def main() -> None:
    from prun.cluster.commands import unalias

    args = unalias(sys.argv[1:])  # list, status, ps, jlist: ls
    if args in FAST:
        from prun.cluster.client import Client
        from prun.cluster.commands import show
        from prun.cluster.errors import PrunError

        try:
            show(Client().list(), as_json=args[-1] == "--json")
        except PrunError as exc:
            print(f"prun: error: {exc}", file=sys.stderr)
            sys.exit(exc.code)
        except KeyboardInterrupt:
            sys.exit(130)
        return
    from prun.cluster.cli import main as cli_main

    cli_main()
