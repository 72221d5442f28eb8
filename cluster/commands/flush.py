"""`prun flush [NAME|ID|all]`: empty apps' log files (and remove their rotated files).

Runs in the client alone (the RPC only resolves NAME: `describe` gives the paths). The log writer keeps
appending to the emptied files (their time indexes are emptied too); `prun logs -f` goes on from their new
start.
"""

from __future__ import annotations

import os
from typing import Any

import click

from prun.cluster.commands import client


@click.command("flush")
@click.argument("target", required=False, default="all")
def command(target: str) -> None:
    """Empty apps' log files."""
    from prun.cluster.daemon.logfiles import IDX_HEADER, rotated, rotated_indexes, worker_files
    from prun.cluster.logopen import open_log

    rows: list[dict[str, Any]] = client().describe(target)
    failed = False
    for row in rows:
        retain = int(row["spec"].get("log_retain", 5))
        main = list(dict.fromkeys([*row["logs"], *filter(None, [row["spec"].get("combined_file")])]))
        for path in main + [w for p in main for w in worker_files(p)]:
            if os.path.exists(path) and not os.path.isfile(path):  # /dev/null: nothing to empty
                continue
            for old in rotated(path, retain) + rotated_indexes(path, retain):
                os.unlink(old)
            empty_index(path + ".idx", IDX_HEADER.size)
            try:
                os.close(open_log(path, os.O_WRONLY | os.O_TRUNC))  # never through another user's symlink
            except FileNotFoundError:
                pass
            except OSError as exc:  # the other files are flushed all the same
                click.echo(f"prun: error: cannot flush {path}: {exc.strerror}", err=True)
                failed = True
                continue
            click.echo(f"flushed {path}")
    if failed:
        raise SystemExit(1)


def empty_index(path: str, header: int) -> None:
    """A time index keeps its header (the file's generation and inode): its times are gone with the lines."""
    from prun.cluster.logopen import open_log

    try:
        fd = open_log(path, os.O_WRONLY)
    except OSError:
        return
    try:
        if os.fstat(fd).st_size > header:
            os.ftruncate(fd, header)
    finally:
        os.close(fd)
