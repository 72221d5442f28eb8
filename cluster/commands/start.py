"""`prun start TARGET|prun.toml [options]`: start an app under the daemon, then print the table.

    prun start app:server -i 2 --name api --env MODE=prod       cluster mode: one master, shared listeners
    prun start "python worker.py --queue jobs" -i 3              fork mode: supervised processes, no listener
    prun start job.py                                            fork mode, with this Python
    prun start prun.toml [--env production]                      every [[apps]] of the file

    -> {"id": 1, "command": "start", "args": {"spec": SPEC, "env": {...the caller's environment...}}}
    <- {"id": 1, "result": [...the app table...]}
    <- {"id": 1, "error": {"code": "ALREADY_RUNNING", "message": "an app named 'api' already exists ..."}}

SPEC is what the client checked and the daemon stores (and `prun save` dumps): name, target, mode, cwd,
namespace, instances, run_args (prun run's options as arguments), bind, backlog, graceful_timeout,
command (fork mode), env (--env only), autorestart and the log writer's settings, each field declared
once in cluster/daemon/schema.py and checked there again by the daemon (BAD_ARGUMENTS, one sentence).
Starting a name that exists restarts it if it is stopped and is refused otherwise. Every option of
`prun run` is an option of `prun start`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import caller_environment, client, show

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    from prun.cluster.daemon import rpc
    from prun.cluster.daemon.app import Spec
    from prun.cluster.errors import PrunError

    spec, env = args.get("spec"), args.get("env")
    if not isinstance(spec, dict) or not isinstance(env, dict):
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, "start needs a spec object and an env object")
    try:
        parsed = Spec.parse(spec, "the start request")
        environ = caller_environment(env)
    except PrunError as exc:
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, str(exc)) from None
    await god.start(parsed, environ)
    return god.views()


def _run_params() -> list[click.Parameter]:
    """`prun run`'s options, made from the same table: whatever run takes, start takes."""
    from prun.cluster import options

    def run(**_values: Any) -> None:
        pass

    return [p for p in click.command()(options.click_options(run)).params if p.name not in ("app", "name", "env")]


def _start(target: str, name: str | None, namespace: str, env: tuple[str, ...], no_autorestart: bool,
           **run_options: Any) -> None:
    from prun.cluster.config import parse_env

    c = client()
    if target.endswith(".toml"):
        from prun.cluster.client import ClientError
        from prun.cluster.daemon.ecosystem import read
        from prun.cluster.errors import PrunError

        sections = [e for e in env if "=" not in e]
        rows: list[dict[str, Any]] = []
        for app in read(target, sections[-1] if sections else None):
            try:
                rows = c.start(**app)
            except ClientError:
                raise  # the daemon's refusal names the app already
            except PrunError as exc:  # an option the client refused: say which file and app
                raise PrunError(f"{target}: app {app['name']!r}: {exc}", exc.code) from None
        show(rows)
        return
    try:
        declared = parse_env(list(env))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env") from None
    instances = run_options.pop("instances", None)
    show(c.start(target, name=name, namespace=namespace, instances=instances, env=declared,
                 autorestart=not no_autorestart, **run_options))


class StartCommand(click.Command):
    """Built when first used, from the run command's parameters plus start's own."""

    def __init__(self) -> None:
        super().__init__(
            "start", callback=_start, help="Start an app under the daemon (TARGET: MODULE:ATTR, a script, a command or a prun.toml).",
            params=[
                click.Argument(["target"]),
                click.Option(["--name"], help="The app's name in the table (default: from TARGET)."),
                click.Option(["--namespace"], default="default", show_default=True,
                             help="A group of apps that commands can name at once."),
                click.Option(["--env"], multiple=True, metavar="KEY=VALUE",
                             help="Set a variable for the app; repeatable. With a prun.toml: the [apps.env_NAME] "
                                  "sections to apply."),
                click.Option(["--no-autorestart"], is_flag=True, help="Do not restart the app when it exits."),
                *_run_params(),
            ])


command = StartCommand()
