"""The daemon's commands, one module each (circus style): the command line and the RPC message side by side.

Each module's docstring shows both; `command` is its click command (the client side, which prints the app
table after acting) and `execute(god, args, writer)` runs in the daemon. The modules load lazily: `prun ls`
imports only the client and the table (entry.py), not even click.
"""

from __future__ import annotations

from typing import Any

# command line name -> module
CLI_COMMANDS = {
    "start": "start", "ls": "ls", "list": "ls", "describe": "describe", "env": "env", "stop": "stop",
    "reload": "reload", "restart": "restart", "delete": "delete", "scale": "scale", "ping": "ping",
    "kill": "kill", "save": "save", "resurrect": "resurrect", "startup": "startup", "logs": "logs",
    "events": "events", "update": "update", "flush": "flush", "reloadLogs": "reloadlogs",
    "monit": "monit",
}
# RPC command -> module (logs, flush, monit and startup have none: they run in the client alone)
RPC_COMMANDS = {
    "start": "start", "list": "ls", "describe": "describe", "env": "env", "stop": "stop", "reload": "reload",
    "restart": "restart", "delete": "delete", "scale": "scale", "ping": "ping", "kill": "kill", "save": "save",
    "resurrect": "resurrect", "subscribe": "events", "update": "update", "reloadLogs": "reloadlogs",
}
NAMES = tuple(CLI_COMMANDS)


def client() -> Any:
    from prun.cluster.client import Client

    return Client()


def show(rows: list[dict[str, Any]], as_json: bool = False) -> None:
    import json

    from prun.cluster.commands.table import render

    print(json.dumps(rows, indent=1) if as_json else render(rows), flush=True)


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


def ecosystem_names(target: str, env_name: str | None = None) -> list[str] | None:
    """The app names of an ecosystem file (prun.toml) given as a target, else None."""
    if not target.endswith(".toml"):
        return None
    from prun.cluster.daemon.ecosystem import read

    return [app["name"] for app in read(target, env_name)]


def target_command(name: str, summary: str) -> Any:
    """A command taking NAME|ID|all|NAMESPACE|FILE.toml that sends `name` once per target and prints the table."""
    import click

    @click.command(name, help=f"{summary} TARGET: a name, an id, all, a namespace or a prun.toml.")
    @click.argument("target")
    def run(target: str) -> None:
        c = client()
        rows: list[dict[str, Any]] = []
        for each in ecosystem_names(target) or [target]:
            rows = c.call(name, target=each)
        show(rows)

    return run
