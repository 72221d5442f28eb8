"""`prun save`: write the apps and how each was started to $PRUN_HOME/dump.json (0600), for `prun resurrect`.

    prun save
    -> {"id": 1, "command": "save"}
    <- {"id": 1, "result": {"path": "/home/me/.prun/dump.json", "apps": 3}}
    <- {"id": 1, "error": {"code": "WRITE_FAILED", "message": "cannot write the dump ...: No space left on device"}}

The dump holds what `start` was given (each app's spec: target, options, declared --env) and, as PM2's,
the environment each app was started in, without the variables `--filter-env PREFIX` names. It is written whole or not at all; the previous one is kept as dump.json.bak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import client

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    from prun.cluster.daemon import dump, rpc
    from prun.cluster.daemon.app import STOPPED
    from prun.cluster.errors import PrunError

    prefixes = args.get("filter_env") or []
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, "filter_env is a list of strings")
    apps = [dump.Saved(app.spec, app.status == STOPPED, dump.filtered(app.base_env, prefixes))
            for app in sorted(god.apps.values(), key=lambda a: a.id)]
    try:
        dump.write(god.home.dump, apps)
    except PrunError as exc:
        raise rpc.RpcError(rpc.WRITE_FAILED, str(exc)) from None
    return {"path": god.home.dump, "apps": len(apps)}


@click.command("save")
@click.option("--filter-env", "filter_env", multiple=True, metavar="PREFIX",
              help="Leave out of the dump the variables whose names start with PREFIX; repeatable.")
def command(filter_env: tuple[str, ...]) -> None:
    """Save the app list (and each app's environment) for prun resurrect."""
    result = client().call("save", filter_env=list(filter_env))
    click.echo(f"saved {result['apps']} apps to {result['path']}")
