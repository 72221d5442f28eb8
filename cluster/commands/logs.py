"""`prun logs [NAME|ID|all] [--lines N] [--nostream]`: the tail of apps' logs, then what they print next.

Reads $PRUN_HOME/logs/<name>-out.log and -err.log itself (no RPC beyond resolving NAME); each line is
prefixed with the app's name, as PM2 does. Follows across a truncation or a rename (rotation).
"""

from __future__ import annotations

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


class Followed:
    def __init__(self, name: str, path: str, offset: int) -> None:
        self.name, self.path, self.offset = name, path, offset
        self.inode = _inode(path)
        self.partial = b""

    def read(self) -> list[str]:
        inode = _inode(self.path)
        if inode != self.inode:
            self.inode, self.offset = inode, 0  # rotated: a new file under the same name
        try:
            with open(self.path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < self.offset:
                    self.offset = 0  # truncated
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


@click.command("logs")
@click.argument("target", required=False, default="all")
@click.option("--lines", default=15, show_default=True, type=click.IntRange(min=0), help="Lines of tail to show.")
@click.option("--nostream", is_flag=True, help="Print the tail and exit.")
def command(target: str, lines: int, nostream: bool) -> None:
    """Show apps' logs: the last lines, then follow."""
    c = client()
    rows: list[dict[str, Any]] = c.describe(target) if target != "all" else c.list()
    if target != "all" and not rows:
        raise click.ClickException(f"no app {target!r}")
    width = max((len(r["name"]) for r in rows), default=0)
    followed = []
    for row in rows:
        for path in c.home.log_paths(row["name"]):
            shown, end = tail(path, lines)
            if shown:
                click.echo(f"==> {path} <==")
            for line in shown:
                click.echo(f"{row['name']:<{width}} | {line}")
            followed.append(Followed(row["name"], path, end))
    if nostream:
        return
    try:
        while True:
            for each in followed:
                for line in each.read():
                    click.echo(f"{each.name:<{width}} | {line}")
            time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        pass
