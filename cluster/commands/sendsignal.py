"""`prun sendSignal SIGNAL TARGET...`: send a signal to apps' processes (PM2's sendSignal).

    prun sendSignal SIGUSR2 worker
    -> {"id": 1, "command": "signal", "args": {"signal": "SIGUSR2", "target": "worker"}}
    <- {"id": 1, "result": [...the app table...]}
    <- {"id": 1, "error": {"code": "NOT_RUNNING", "message": "worker is stopped: no process to signal"}}

SIGNAL is a name (SIGUSR2 or USR2) or a number. A fork-mode app's instances get it (the program is the
app); a cluster-mode app's master gets it, as from `kill` (HUP reloads, TTIN/TTOU scale, USR1 reopens
the logs: README, Signals), never its workers behind its back.
"""

from __future__ import annotations

import signal as signals
from typing import TYPE_CHECKING, Any

import click

from prun.cluster.commands import app_targets, client, show

if TYPE_CHECKING:
    import asyncio

    from prun.cluster.daemon.god import God


def parse_signal(text: str) -> signals.Signals:
    """SIGUSR2, USR2, usr2 or 12; ValueError saying what a signal is."""
    name = text.strip().upper()
    try:
        if name.isdigit():
            return signals.Signals(int(name))
        return signals.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {text!r}: give a name (SIGUSR2, USR2) or a number") from None


async def execute(god: God, args: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    import os

    from prun.cluster.daemon import rpc
    from prun.cluster.daemon.app import ONLINE

    try:
        signum = parse_signal(str(args.get("signal", "")))
    except ValueError as exc:
        raise rpc.RpcError(rpc.BAD_ARGUMENTS, str(exc)) from None
    apps = god.resolve(args.get("target", ""))
    for app in apps:
        if not app.pid or app.status not in (ONLINE, "reloading"):
            raise rpc.RpcError(rpc.NOT_RUNNING, f"{app.name} is {app.status}: no process to signal")
    for app in apps:
        pids = [app.pid]
        if app.spec.mode == "fork":
            status = await god.runner(app).status() or {}
            pids = [int(w["pid"]) for w in status.get("workers", []) if w.get("pid")]
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # it exited meanwhile: its restart is the supervisor's
        god.say(f"{app.name}: sent {signum.name} to {' '.join(map(str, pids)) or 'no process'}")
    return god.views(apps)


@click.command("sendSignal")
@click.argument("signal")
@click.argument("targets", nargs=-1, required=True)
def command(signal: str, targets: tuple[str, ...]) -> None:
    """Send SIGNAL to apps: a fork app's instances, a cluster app's master."""
    try:
        parse_signal(signal)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SIGNAL") from None
    rows = client().signal(signal, app_targets(targets))
    click.echo(f"sent {parse_signal(signal).name} to {', '.join(row['name'] for row in rows)}")
    show(rows)
