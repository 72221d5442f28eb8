"""`prun pid [TARGET...]`: the pid of each app's master (fork mode: its supervisor's), one per line; 0 when
it runs none (PM2's pid). Every app without TARGET.

Runs in the client: the daemon resolves TARGET in a `describe` request.
"""

from __future__ import annotations

import click

from prun.cluster.commands import app_targets, client


@click.command("pid")
@click.argument("targets", nargs=-1)
def command(targets: tuple[str, ...]) -> None:
    """Print the pid of apps' masters, one per line (0: not running)."""
    for row in client().describe(app_targets(targets) if targets else "all"):
        click.echo(str(row["pid"] or 0))
