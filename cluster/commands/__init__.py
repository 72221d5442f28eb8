"""The daemon's commands, one module each (circus style): the command line and the RPC message side by side.

Each module's docstring shows both; `command` is its click command (the client side, which prints the app
table after acting) and `execute(god, args, writer)` runs in the daemon. The modules load lazily: `prun ls`
imports only the client and the table (entry.py), not even click.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

# command line name -> module
CLI_COMMANDS = {
    "start": "start", "ls": "ls", "describe": "describe", "env": "env", "stop": "stop",
    "reload": "reload", "restart": "restart", "delete": "delete", "scale": "scale", "ping": "ping",
    "kill": "kill", "save": "save", "resurrect": "resurrect", "startup": "startup", "logs": "logs",
    "events": "events", "update": "update", "flush": "flush", "reloadLogs": "reloadlogs",
    "monit": "monit", "reset": "reset", "pid": "pid", "sendSignal": "sendsignal",
    "startOrRestart": "startorrestart", "startOrReload": "startorreload", "startOrGracefulReload": "startorreload",
}
# what PM2 users type first -> prun's command line
ALIASES = {
    "list": ["ls"], "status": ["ls"], "ps": ["ls"], "jlist": ["ls", "--json"], "show": ["describe"],
    "info": ["describe"], "desc": ["describe"], "log": ["logs"],
}
# RPC command -> module (logs, flush, monit, pid, startup and startOr* have none: they run in the client alone)
RPC_COMMANDS = {
    "start": "start", "list": "ls", "describe": "describe", "env": "env", "stop": "stop", "reload": "reload",
    "restart": "restart", "delete": "delete", "scale": "scale", "ping": "ping", "kill": "kill", "save": "save",
    "resurrect": "resurrect", "subscribe": "events", "update": "update", "reloadLogs": "reloadlogs",
    "reset": "reset", "signal": "sendsignal",
}
NAMES = (*CLI_COMMANDS, *ALIASES)


def unalias(args: list[str]) -> list[str]:
    """`prun jlist` -> `prun ls --json`, and the other aliases of ALIASES."""
    return [*ALIASES[args[0]], *args[1:]] if args and args[0] in ALIASES else args


def client() -> Any:
    from prun.cluster.client import Client

    return Client()


def show(rows: list[dict[str, Any]], as_json: bool = False) -> None:
    import json

    from prun.cluster.commands.table import render

    print(json.dumps(rows, indent=1) if as_json else render(rows), flush=True)


def show_after(act: Callable[[], list[dict[str, Any]]]) -> None:
    """Print the table once `act` is done; when it could not do all (an app that cannot start, one that is not
    running), the table all the same (what the others are now), then the line saying why (exit code 1)."""
    from prun.cluster.client import ClientError

    try:
        rows = act()
    except ClientError as exc:
        if exc.code_name not in ("START_FAILED", "NOT_RUNNING"):
            raise
        show(client().list())
        raise
    show(rows)


def caller_environment(env: Any) -> dict[str, str]:
    """The environment a client sent (the daemon's side of start, resurrect, restart), checked; PrunError if not."""
    from prun.cluster.daemon import schema

    if not isinstance(env, dict):
        raise schema.SpecError("the environment sent is not an object")
    environ = {str(k): str(v) for k, v in env.items()}
    try:
        schema.variables(environ)
    except ValueError as exc:
        raise schema.SpecError(f"invalid environment: {exc}") from None
    return environ


def is_file(target: str) -> bool:
    """Whether a target is an ecosystem file (prun.toml) rather than an app."""
    return target.endswith(".toml")


def app_targets(targets: tuple[str, ...] | list[str], only: str | None = None) -> list[str]:
    """What the daemon resolves for targets typed on the command line: a prun.toml becomes its apps' names
    (those of --only), a script file here its absolute path; names, ids, namespaces, all, /regex/ go as they are."""
    import os

    from prun.cluster.daemon.ecosystem import read

    found: list[str] = []
    for target in targets:
        if is_file(target):
            found += [app["name"] for app in read(target, only=only)]
        elif os.path.isfile(target):
            found.append(os.path.abspath(target))
        else:
            found.append(target)
    return found


F = TypeVar("F", bound=Callable[..., Any])


def only_option() -> Callable[[F], F]:
    import click

    return click.option("--only", metavar="NAME[,NAME]", help="With a prun.toml: only these of its apps.")


def target_command(name: str, summary: str) -> Any:
    """A command taking TARGET... (names, ids, all, namespaces, /regex/, scripts, prun.toml files) that sends
    `name` once for all of them and prints the table."""
    import click

    @click.command(name, help=f"{summary} TARGET: a name, an id, all, a namespace, a /regex/, a script or a "
                              "prun.toml; several at once.")
    @click.argument("targets", nargs=-1, required=True)
    @only_option()
    def run(targets: tuple[str, ...], only: str | None) -> None:
        show_after(lambda: client().call(name, target=app_targets(targets, only)))

    return run
