"""`prun restart TARGET... [--env KEY=VALUE] [--update-env]`: stop, then start again.

    prun restart api --env MODE=debug
    -> {"id": 1, "command": "restart", "args": {"target": "api", "env": {"MODE": "debug"}, "environ": null}}
    <- {"id": 1, "result": [...the app table...]}

Exactly `prun stop` then `prun start` with the stored arguments, whatever the app's state (online, stopped,
errored, crash-looping): a fresh master in a fresh environment, the code imported anew. The listening
sockets stay open in between, so clients wait in the backlog instead of being refused. `environ` (sent by
--update-env) replaces the stored caller's environment; `env` changes declared variables. `target` is
a string or a list of them (PROTOCOL.md). A prun.toml is re-read by the client (appfile.py): its env is
applied and its apps the daemon does not have are started.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import app_targets, caller_environment, client, is_file, only_option, show_after

if TYPE_CHECKING:
    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    from prun.cluster.daemon import rpc
    from prun.cluster.errors import PrunError

    env, environ = args.get("env") or {}, args.get("environ")
    if not isinstance(env, dict) or not (environ is None or isinstance(environ, dict)):
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, "env and environ are objects of strings")
    try:
        declared = caller_environment(env)
        environ = None if environ is None else caller_environment(environ)
    except PrunError as exc:
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, str(exc)) from None
    apps = god.resolve(args.get("target", ""))
    await god.each([god.restart(app, environ, declared) for app in apps])
    return god.views()


@click.command("restart")
@click.argument("targets", nargs=-1, required=True)
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="Set or change a variable; repeatable. With a prun.toml: the [apps.env_NAME] section to apply.")
@click.option("--update-env", is_flag=True, help="Take this shell's environment instead of the one stored at start.")
@only_option()
def command(targets: tuple[str, ...], env: tuple[str, ...], update_env: bool, only: str | None) -> None:
    """Stop then start apps with their stored arguments (sockets stay open: no connection refused).

    TARGET: a name, an id, all, a namespace, a /regex/, a script or a prun.toml (re-read: its env applied,
    its apps not in the table started); several at once."""
    from prun.cluster.commands.appfile import act
    from prun.cluster.config import parse_env

    files = [t for t in targets if is_file(t)]
    for path in files:
        act(path, env, only, reload=False, update_env=update_env)
    apps = [t for t in targets if not is_file(t)]
    if not apps:
        return
    try:
        declared = parse_env(list(env))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env") from None
    show_after(lambda: client().restart(app_targets(apps), env=declared, update_env=update_env))
