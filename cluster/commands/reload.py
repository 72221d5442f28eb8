"""`prun reload TARGET... [--update-env]`: a lossless rolling reload (the master's HUP); returns when done.

    prun reload api
    -> {"id": 1, "command": "reload", "args": {"target": "api"}}
    <- {"id": 1, "result": [...the app table...]}
    <- {"id": 1, "error": {"code": "START_FAILED", "message": "api: reload failed: ...; every worker keeps ..."}}

A stopped or errored app is started instead (as PM2 does).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import app_targets, client, is_file, only_option, show_after
from prun.cluster.errors import UsageError

if TYPE_CHECKING:
    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    await god.each([god.reload(app) for app in god.resolve(args.get("target", ""))])
    return god.views()


@click.command("reload")
@click.argument("targets", nargs=-1, required=True)
@click.option("--env", "env", multiple=True, metavar="NAME",
              help="With a prun.toml: the [apps.env_NAME] section to apply.")
@click.option("--update-env", is_flag=True, help="Take this shell's environment: a restart, since a reload keeps "
                                                 "the master's (no connection is refused either way).")
@only_option()
def command(targets: tuple[str, ...], env: tuple[str, ...], update_env: bool, only: str | None) -> None:
    """Reload apps worker by worker, losing nothing.

    TARGET: a name, an id, all, a namespace, a /regex/, a script or a prun.toml (re-read: its apps not in
    the table started, those whose env it changes restarted); several at once."""
    from prun.cluster.commands.appfile import act

    for path in [t for t in targets if is_file(t)]:
        act(path, env, only, reload=True, update_env=update_env)
    apps = [t for t in targets if not is_file(t)]
    if not apps:
        return
    if env:
        raise UsageError("prun reload takes --env NAME with a prun.toml only: a reload keeps the master's "
                         "environment (prun restart NAME --env KEY=VALUE changes it)")
    c = client()
    if update_env:
        click.echo("restarting, not reloading: --update-env gives a new environment, which a reload cannot",
                   err=True)
        show_after(lambda: c.restart(app_targets(apps), update_env=True))
        return
    show_after(lambda: c.reload(app_targets(apps)))
