"""`prun logs [NAME|ID|all] [--lines N] [--nostream] [--json] [--err|--out]`: the tail of apps' logs, then what they print next.

Reads the apps' log files itself (the RPC only resolves NAME: `describe` gives the paths); each line is
prefixed with the app's name, as PM2 does, or printed as one JSON object (--json) with the time the log
writer received it (from the file's time index). Follows across any number of rotations, compressed ones
too (cluster/daemon/follower.py), and a truncation (`prun flush`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from prun.cluster.commands import client

FOLLOW_INTERVAL = 0.1


def tail(path: str, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines of a file, and the offset its end is at."""
    from prun.cluster.daemon.follower import tail as timed_tail

    shown, end = timed_tail(path, lines)
    return [line.decode("utf-8", "replace") for line, _ in shown], end


@click.command("logs")
@click.argument("target", required=False, default="all")
@click.option("--lines", default=15, show_default=True, type=click.IntRange(min=0), help="Lines of tail to show.")
@click.option("--nostream", is_flag=True, help="Print the tail and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: app, stream, time, message "
              "(time: when the log writer received the line, seconds since the epoch).")
@click.option("--err", "only_err", is_flag=True, help="Only the err logs.")
@click.option("--out", "only_out", is_flag=True, help="Only the out logs.")
def command(target: str, lines: int, nostream: bool, as_json: bool, only_err: bool, only_out: bool) -> None:
    """Show apps' logs: the last lines, then follow (across rotations)."""
    from prun.cluster.daemon.follower import Follower
    from prun.cluster.daemon.follower import tail as timed_tail
    from prun.cluster.daemon.logfiles import worker_files

    rows: list[dict[str, Any]] = client().describe(target)
    if target != "all" and not rows:
        raise click.ClickException(f"no app {target!r}")
    width = max((len(r["name"]) for r in rows), default=0)

    def echo(name: str, stream: str, raw: bytes, when: float | None) -> None:
        line = raw.decode("utf-8", "replace")
        if as_json:
            click.echo(json.dumps({"app": name, "stream": stream, "time": None if when is None else round(when, 3),
                                   "message": line}))
        else:
            click.echo(f"{name:<{width}} | {line}")

    if only_err and only_out:
        raise click.UsageError("--err and --out: give one (neither shows both)")
    streams = ("err",) if only_err else ("out",) if only_out else ("out", "err")
    followed: list[tuple[str, str, Follower]] = []
    for row in rows:
        out, err = row["logs"]
        main = [(s, p) for s, p in (("out", out), ("err", err)) if s in streams]
        if out == err and len(main) == 2:
            main = main[:1]  # one file for both
        for stream, path in [*main, *((s, w) for s, p in main for w in worker_files(p))]:
            shown, end = timed_tail(path, lines)
            if shown and not as_json:
                click.echo(f"==> {path} <==")
            for line, when in shown:
                echo(row["name"], stream, line, when)
            followed.append((row["name"], stream, Follower(path, end)))
    if nostream:
        return
    try:
        while True:
            for name, stream, follower in followed:
                for line, when in follower.read():
                    echo(name, stream, line, when)
                if follower.missed:
                    click.echo(f"prun: {follower.missed} rotated files of {follower.path} were removed before they "
                               "could be read (--log-retain)", err=True)
                    follower.missed = 0
            time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        pass
