"""`prun logs [NAME|ID|all] [--lines N] [--nostream] [--json] [--err|--out]`: the tail of apps' logs, then what they print next.

Reads the apps' log files itself (the RPC only resolves NAME: `describe` gives the paths); each line is
prefixed with the app's name, as PM2 does, or printed as one JSON object (--json). Follows across a
rotation (the rest of the rotated file first, then the new one) and a truncation (`prun flush`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from prun.cluster.commands import client

FOLLOW_INTERVAL = 0.1


def tail(path: str, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines of a file, and the offset its end is at."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - max(lines, 1) * 512))
            data = fh.read(end - fh.tell())
    except OSError:
        return [], 0
    text = data.decode("utf-8", "replace").splitlines()
    return (text[-lines:] if lines else []), end


@click.command("logs")
@click.argument("target", required=False, default="all")
@click.option("--lines", default=15, show_default=True, type=click.IntRange(min=0), help="Lines of tail to show.")
@click.option("--nostream", is_flag=True, help="Print the tail and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: app, stream, time, message.")
@click.option("--err", "only_err", is_flag=True, help="Only the err logs.")
@click.option("--out", "only_out", is_flag=True, help="Only the out logs.")
def command(target: str, lines: int, nostream: bool, as_json: bool, only_err: bool, only_out: bool) -> None:
    """Show apps' logs: the last lines, then follow (across rotations)."""
    from prun.cluster.daemon.logfiles import Follower, worker_files

    rows: list[dict[str, Any]] = client().describe(target)
    if target != "all" and not rows:
        raise click.ClickException(f"no app {target!r}")
    width = max((len(r["name"]) for r in rows), default=0)

    def echo(name: str, stream: str, line: str) -> None:
        if as_json:
            click.echo(json.dumps({"app": name, "stream": stream, "time": round(time.time(), 3), "message": line}))
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
            shown, end = tail(path, lines)
            if shown and not as_json:
                click.echo(f"==> {path} <==")
            for line in shown:
                echo(row["name"], stream, line)
            followed.append((row["name"], stream, Follower(path, end)))
    if nostream:
        return
    try:
        while True:
            for name, stream, follower in followed:
                for raw in follower.read():
                    echo(name, stream, raw.decode("utf-8", "replace"))
            time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        pass
