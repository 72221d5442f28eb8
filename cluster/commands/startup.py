"""`prun startup systemd [--install] [--unit-dir DIR]`: a systemd unit that resurrects the saved apps at boot.

Prints the unit; with --install writes it (a system unit in /etc/systemd/system as root, a user unit in
~/.config/systemd/user otherwise or with --user; --unit-dir elsewhere) and says which systemctl command enables it. Run `prun save` first: the unit
starts the daemon with `prun resurrect`, `systemctl reload` reloads every app, `systemctl stop` is `prun kill`.
KillMode=process: the apps' masters outlive a crashed daemon, whose next start adopts them.
"""

from __future__ import annotations

import getpass
import os
import shutil
import sys

import click

from prun.cluster.daemon.home import Home


def unit(home: Home, prun: str, system: bool) -> str:
    user = getpass.getuser()
    lines = [
        "[Unit]",
        f"Description=prun daemon for {user} ({home.path})",
        "After=network.target",
        "",
        "[Service]",
        "Type=forking",
        *([f"User={user}"] if system else []),
        f"Environment=PRUN_HOME={home.path}",
        f"Environment=PATH={os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        f"PIDFile={home.pid_file}",
        f"ExecStart={prun} resurrect",
        f"ExecReload={prun} reload all",
        f"ExecStop={prun} kill",
        "KillMode=process",
        "Restart=on-failure",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
    ]
    return "\n".join(lines) + "\n"


@click.command("startup")
@click.argument("platform", type=click.Choice(["systemd"]))
@click.option("--install", is_flag=True, help="Write the unit file instead of printing it.")
@click.option("--user", "user_unit", is_flag=True, help="A user unit (systemctl --user); the default when not root.")
@click.option("--unit-dir", help="Where to write it.  [default: /etc/systemd/system for a system unit, "
                                 "~/.config/systemd/user for a user unit]")
def command(platform: str, install: bool, user_unit: bool, unit_dir: str | None) -> None:
    """Print (or --install) a systemd unit that resurrects the saved apps at boot."""
    home = Home.from_environ()
    system = os.geteuid() == 0 and not user_unit
    prun = shutil.which("prun", path=os.path.dirname(sys.executable)) or f"{sys.executable} -m prun.cluster"
    text = unit(home, prun, system)
    if not install:
        click.echo(text, nl=False)
        return
    directory = unit_dir or ("/etc/systemd/system" if system else os.path.expanduser("~/.config/systemd/user"))
    name = f"prun-{getpass.getuser()}.service"
    path = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"wrote {path}; enable it with: systemctl {'' if system else '--user '}enable --now {name}")
