"""`prun start TARGET... [options]`: start apps under the daemon, then print the table.

    prun start app:server -i 2 --name api --env MODE=prod       cluster mode: one master, shared listeners
    prun start "python worker.py --queue jobs" -i 3              fork mode: supervised processes, no listener
    prun start job.py other.py                                   fork mode, with this Python; several at once
    prun start prun.toml [--env production] [--only api]         every [[apps]] of the file (appfile.py)
    prun start api | prun start 0                                an app the daemon has: restarted (PM2's smart start)

    -> {"id": 1, "command": "start", "args": {"spec": SPEC, "env": {...the caller's environment...}}}
    <- {"id": 1, "result": [...the app table...]}
    <- {"id": 1, "error": {"code": "ALREADY_RUNNING", "message": "an app named 'api' already exists ..."}}

SPEC is what the client checked and the daemon stores (and `prun save` dumps): name, target, mode, cwd,
namespace, instances, run_args (prun run's options as arguments), bind, backlog, graceful_timeout,
command (fork mode), env (--env only), autorestart and the log writer's settings, each field declared
once in cluster/daemon/schema.py and checked there again by the daemon (BAD_ARGUMENTS, one sentence).
Every option of `prun run` is an option of `prun start`, plus PM2's -o/--output, -e/--error, -l/--log.

A TARGET that names apps the daemon has (a name, an id, all, a namespace, a /regex/: neither MODULE:ATTR
nor a file here, nor renamed by --name) restarts them whatever their state, with --env and --update-env
applied; another option is refused in one line (nothing is done) saying how to change it. A spec whose
name exists starts that app again if it is stopped or errored, with the spec given now (its options, its
environment), and is refused (ALREADY_RUNNING) if it runs, as PM2's "already launched".
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


def _given(namespace: str, run_options: dict[str, Any]) -> list[str]:
    """The options given on the command line beside --env and --update-env, as flags."""
    given = [f"--{'' if v is not False else 'no-'}{k.replace('_', '-')}" for k, v in run_options.items()
             if v is not None and v != ()]
    return given + (["--namespace"] if namespace != "default" else [])


def _names_an_app(target: str, name: str | None) -> bool:
    """Whether TARGET may name apps of the daemon (PM2's smart start): an id, `all`, or a name, which is not a
    MODULE:ATTR nor a file here (and not renamed by --name)."""
    import os

    from prun.cluster import names
    from prun.cluster.client import APP_PATTERN

    if name not in (None, target) or APP_PATTERN.fullmatch(target) or os.path.exists(target):
        return False
    if len(target) > 2 and target[0] == target[-1] == "/":
        return True  # a /regex/ of names
    try:
        names.check(target)
    except ValueError:
        return False
    return True


def _restart_existing(c: Any, target: str, declared: dict[str, str], update_env: bool, given: list[str]) -> bool:
    """`prun start NAME|ID` of apps the daemon has: restarted (whatever their state), True; False if none."""
    from prun.cluster.client import ClientError
    from prun.cluster.errors import UsageError

    try:
        rows = c.describe(target)
    except ClientError as exc:
        if exc.code_name != "NO_SUCH_APP" or target.isdigit() or target == "all" or target.startswith("/"):
            raise
        return False  # a command of that name, to start
    if given:
        shown = ", ".join(dict.fromkeys(given))
        named = rows[0]["name"] if len(rows) == 1 else target
        raise UsageError(f"{named} is an app already: prun start {target} starts it again as it was started and "
                         f"cannot apply {shown}; prun delete {named}, then prun start with them")
    c.restart(target, env=declared, update_env=update_env)
    return True


def _start(targets: tuple[str, ...], name: str | None, namespace: str, env: tuple[str, ...], update_env: bool,
           only: str | None, output: str | None, error: str | None, **run_options: Any) -> None:
    from prun.cluster.client import ClientError
    from prun.cluster.commands import is_file
    from prun.cluster.commands.appfile import act
    from prun.cluster.config import parse_env
    from prun.cluster.errors import UsageError

    if name is not None and len(targets) > 1:
        raise UsageError("--name names one app: give one target")
    for flag, value, option in (("--output", output, "log_file"), ("--error", error, "error_file")):
        if value is not None:
            if run_options.get(option) is not None:
                raise UsageError(f"{flag} and --{option.replace('_', '-')} are the same option: give one")
            run_options[option] = value
    if run_options.get("log_date_format") is not None and not run_options.get("time"):
        run_options["time"] = True  # --log-date-format alone stamps lines, as PM2's does
    c = client()
    started = False
    failed: list[ClientError] = []  # an app that cannot get online stays listed; the next targets are started
    for target in targets:
        if is_file(target):
            act(target, env, only, reload=False, update_env=update_env)
            continue
        try:
            declared = parse_env([e for e in env])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--env") from None
        try:
            if not (_names_an_app(target, name) and _restart_existing(
                    c, target, declared, update_env, _given(namespace, run_options))):
                c.start(target, name=name, namespace=namespace, env=declared, **run_options)
        except ClientError as exc:
            if exc.code_name != "START_FAILED":
                raise
            failed.append(exc)
        started = True
    if started:
        show(c.list())
    if failed:  # after the table, one line: what could not start, and why
        raise failed[0] if len(failed) == 1 else ClientError("START_FAILED", "; ".join(map(str, failed)))


class StartCommand(click.Command):
    """Built when first used, from the run command's parameters plus start's own."""

    def __init__(self) -> None:
        super().__init__(
            "start", callback=_start, help="Start apps under the daemon (TARGET: MODULE:ATTR, a script, a command or a "
                                           "prun.toml; the name or id of an app it has restarts it).",
            params=[
                click.Argument(["targets"], nargs=-1, required=True),
                click.Option(["--name"], help="The app's name in the table (default: from TARGET)."),
                click.Option(["--namespace"], default="default", show_default=True,
                             help="A group of apps that commands can name at once."),
                click.Option(["--env"], multiple=True, metavar="KEY=VALUE",
                             help="Set a variable for the app; repeatable. With a prun.toml: the [apps.env_NAME] "
                                  "sections to apply."),
                click.Option(["--update-env"], is_flag=True, help="An app started again takes this shell's "
                                                                   "environment instead of the one stored."),
                click.Option(["--only"], metavar="NAME[,NAME]", help="With a prun.toml: only these of its apps."),
                click.Option(["-o", "--output"], metavar="FILE", help="The app's out log (PM2's; = --log-file)."),
                click.Option(["-e", "--error"], metavar="FILE", help="The app's err log (PM2's; = --error-file)."),
                click.Option(["-l", "--log", "combined_file"], metavar="FILE",
                             help="A third log with the lines of both, beside the out and err logs (PM2's -l)."),
                *_run_params(),
            ])


command = StartCommand()
