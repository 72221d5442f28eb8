"""The apps of a prun.toml acted on as one: `start`, `restart`, `reload`, `startOrRestart`, `startOrReload` FILE.

Each app of the file (or of --only) that the daemon does not have, or has stopped or errored, is started
with what the file says now (its options and env, and the --env section). One that runs is restarted with
the file's env (`start`, `restart`, `startOrRestart`: PM2's startOrRestart), or reloaded losslessly
(`reload`, `startOrReload`): unless its env changed, since a reload keeps the master's environment; then
it is restarted instead, and a line says so.
"""

from __future__ import annotations

from typing import Any

import click

from prun.cluster.commands import show


def act(path: str, env: tuple[str, ...], only: str | None, reload: bool, update_env: bool = False) -> None:
    """Start, restart or reload the apps of the file `path`, then print the table."""
    from prun.cluster.client import ClientError
    from prun.cluster.commands import client
    from prun.cluster.config import parse_env
    from prun.cluster.daemon.ecosystem import read
    from prun.cluster.errors import PrunError

    sections = [e for e in env if "=" not in e]
    try:
        declared = parse_env([e for e in env if "=" in e])  # KEY=VALUE too: set in every app
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env") from None
    c = client()
    for app in read(path, sections[-1] if sections else None, only):
        app["env"].update(declared)
        name = app["name"]
        try:
            c.start(**app)
            continue
        except ClientError as exc:  # the daemon's refusal names the app already
            if exc.code_name != "ALREADY_RUNNING":
                raise
        except PrunError as exc:  # an option the client refused: say which file and app
            raise PrunError(f"{path}: app {name!r}: {exc}", exc.code) from None
        if reload and not update_env and not _env_changes(c.describe(name)[0]["spec"]["env"], app["env"]):
            c.reload(name)
            continue
        if reload:
            click.echo(f"{name}: restarted, not reloaded: its environment changes, and a reload keeps the "
                       "master's (no connection is refused either way)", err=True)
        c.restart(name, env=app["env"], update_env=update_env)
    show(c.list())


def _env_changes(stored: dict[str, str], given: dict[str, str]) -> bool:
    return {**stored, **given} != stored


def file_command(name: str, reload: bool, summary: str) -> Any:
    """startOrRestart / startOrReload FILE [--env NAME] [--only NAME,...]."""

    @click.command(name, help=summary)
    @click.argument("file")
    @click.option("--env", multiple=True, metavar="NAME", help="The [apps.env_NAME] sections to apply (KEY=VALUE: "
                                                               "a variable for every app).")
    @click.option("--only", metavar="NAME[,NAME]", help="Only these apps of the file.")
    @click.option("--update-env", is_flag=True, help="A restarted app takes this shell's environment.")
    def run(file: str, env: tuple[str, ...], only: str | None, update_env: bool) -> None:
        from prun.cluster.commands import is_file
        from prun.cluster.errors import UsageError

        if not is_file(file):
            raise UsageError(f"prun {name} takes a prun.toml, not {file!r}")
        act(file, env, only, reload, update_env)

    return run
