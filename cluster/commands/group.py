"""The `prun` click group, with the daemon's commands loaded only when one is run."""

from __future__ import annotations

import importlib

import click

from prun.cluster.commands import CLI_COMMANDS


class Group(click.Group):
    """The `prun` group: `run` and the commands of cluster/commands/, each imported when it is run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(CLI_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in CLI_COMMANDS:
            module = importlib.import_module(f"prun.cluster.commands.{CLI_COMMANDS[cmd_name]}")
            command: click.Command = module.command
            return command
        return super().get_command(ctx, cmd_name)
