"""docs/from-pm2.md cannot go stale: every prun command and flag its table names exists, and so does every
PM2 command and flag it says prun takes as it is ("same")."""

from __future__ import annotations

import re
from pathlib import Path

import click

from prun.cluster.cli import cli
from prun.cluster.commands import ALIASES, NAMES

PAGE = Path(__file__).resolve().parent.parent / "docs" / "from-pm2.md"
PM2_ONLY = {"startOrGracefulReload"}  # spelt as PM2 does, listed in NAMES


def known_flags() -> set[str]:
    ctx = click.Context(cli)
    flags: set[str] = set()
    for name in cli.list_commands(ctx):  # type: ignore[attr-defined]
        command = cli.get_command(ctx, name)
        for param in command.params if command else []:
            flags.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("-"))
    return flags


def rows() -> list[list[str]]:
    found = []
    for line in PAGE.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| PM2 |"):
            found.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return found


def test_the_table_has_the_rows_pm2_users_look_for() -> None:
    text = " ".join(cell for row in rows() for cell in row)
    for pm2 in ("pm2 start", "pm2 reload", "pm2 restart", "pm2 logs", "pm2 save", "pm2 startup", "--watch",
                "--max-memory-restart", "--max-restarts", "ecosystem"):
        assert pm2 in text


def test_every_command_and_flag_the_table_names_exists() -> None:
    flags = known_flags()
    missing = []
    for pm2, prun, _ in rows():
        snippets = re.findall(r"`([^`]+)`", prun)
        if prun.startswith("same"):
            snippets += [s.replace("pm2 ", "prun ", 1) for s in re.findall(r"`([^`]+)`", pm2)]
        for snippet in snippets:
            words = snippet.split()
            if words[0] == "prun" and len(words) > 1 and ":" not in words[1] and not words[1].endswith(".py") \
                    and not words[1].startswith(("-", '"')) and words[1] not in ("a.js", "app.js"):
                for command in words[1].split("/"):
                    if command not in NAMES and command not in ALIASES and command not in PM2_ONLY:
                        missing.append(f"command {command!r} ({snippet})")
            if snippet.startswith('"'):  # a command line of the app's own: its flags are its own
                continue
            for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", snippet):
                if flag not in flags:
                    missing.append(f"flag {flag} ({snippet})")
    assert missing == []
