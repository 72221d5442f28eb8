"""The `prun` command: parses options into the one Config and runs a master in the foreground.

Every failure a user can cause ends here as one line on stderr and an exit code.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from prun.cluster import commands, options, pidfile
from prun.cluster.commands.group import Group
from prun.cluster.errors import EXIT_USAGE, PrunError
from prun.runtime import DISTRIBUTION

if TYPE_CHECKING:
    from prun.cluster.config import Config, FileExtras
    from prun.cluster.gunicorn import MasterHooks
    from prun.cluster.log import Log

COMMANDS = ("run", *commands.NAMES)


def serve(cli_values: dict[str, Any], control_fd: int | None = None) -> int:
    """Build the config, bind the listeners, run the master; the exit code.

    `control_fd`: under the daemon, the listener of the master's control channel (cluster/control.py)."""
    from prun.cluster import config as config_mod
    from prun.cluster import master
    from prun.cluster.log import Log

    signal.pthread_sigmask(signal.SIG_BLOCK, master.SIGNALS)  # held until the master handles them
    environ = dict(os.environ)
    extras = config_mod.FileExtras()
    config = config_mod.build(cli_values, environ, extras)
    config_mod.check_tls(config)
    if config.health:
        from prun.cluster.health import parse_address

        parse_address(config.health)
    log = Log(config.log_format, app=config.name or config.app, json_time=config.log_json_time,
              level=config.log_level)
    for note in extras.notes:  # a gunicorn config file's settings that prun does not apply, and why
        log.warning(note)
    try:
        return serve_logged(cli_values, environ, config, log, control_fd, extras)
    except PrunError as exc:
        if log.records is None:
            raise
        log.error(str(exc))  # --log-format json: one record, as every other event
        raise SystemExit(exc.code) from None


def serve_logged(cli_values: dict[str, Any], environ: dict[str, str], config: Config, log: Log,
                 control_fd: int | None, extras: FileExtras) -> int:
    """serve() once its log is there: open --log-file, bind, run the master (and a gunicorn config file's
    on_starting before binding, its on_exit at the end)."""
    from prun.cluster.gunicorn import MasterHooks

    if config.log_file:
        os.close(log.open_file(config.log_file))
    hooks = MasterHooks(extras.hooks, lambda level, message: getattr(log, level)(message), config.app,
                        config.instances)
    hooks.run("on_starting", fatal=True)
    try:
        return _bind_and_run(cli_values, environ, config, log, control_fd, hooks)
    finally:
        hooks.run("on_exit")


def _bind_and_run(cli_values: dict[str, Any], environ: dict[str, str], config: Config, log: Log,
                  control_fd: int | None, hooks: MasterHooks) -> int:
    """Bind the listeners (unless systemd or the daemon gave them), run the master; its exit code."""
    from prun.cluster import config as config_mod
    from prun.cluster import listeners as listeners_mod
    from prun.cluster import master
    from prun.cluster.notify import Notifier

    for spec in config.bind:
        listeners_mod.parse(spec)  # every address is checked before any is bound
    listeners = listeners_mod.systemd_listeners(os.environ)
    if not listeners or cli_values.get("bind"):
        access = listeners_mod.UnixAccess.from_options(config.unix_mode, config.unix_group)
        listeners += listeners_mod.bind_all(config.bind, config.backlog, access)
    try:
        import setproctitle

        setproctitle.setproctitle("prun master " + " ".join(sys.argv[1:]))
    except ImportError:  # pragma: no cover
        pass
    for listener in listeners:
        log.info(f"listening on {listener.address}")
    if config.pid_file:
        pidfile.write(config.pid_file)
    try:
        notifier = Notifier.from_environ()
        reconfigure = config_mod.Reconfigure(cli_values, environ, config, log)
        return master.run(config, listeners, log, reconfigure, notifier, control_fd, hooks)
    finally:
        if config.pid_file:
            pidfile.remove(config.pid_file)
        for listener in listeners:
            if listener.kind == "unix" and listener.spec.startswith("unix:"):
                try:
                    os.unlink(listener.spec[5:])
                except OSError:
                    pass
            listener.sock.close()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name=DISTRIBUTION, prog_name="prun")
def cli() -> None:
    """prun: a pre-fork cluster runtime for Python network services.

    \b
      prun app:server -i max        one worker per CPU, master in the foreground
      kill -HUP <master pid>        rolling reload onto the new code, nothing lost
      prun start app:server -i max  the same under a background daemon: prun ls, reload, logs, ...
    """


@cli.command("run")
@options.click_options
@click.option("--control-fd", type=int, default=None, hidden=True)  # given by the daemon only
def run_command(control_fd: int | None, **values: Any) -> None:
    """Serve APP (MODULE:ATTR) with a master in the foreground."""
    sys.exit(serve(values, control_fd))


def main(argv: list[str] | None = None) -> None:
    """Entry point: `prun MODULE:ATTR ...` is `prun run MODULE:ATTR ...`."""
    args = commands.unalias(list(sys.argv[1:] if argv is None else argv))
    if not args or args[0] not in COMMANDS and args[0] not in ("-h", "--help", "--version"):
        hint = options.nearest(args[0], COMMANDS, cutoff=0.75) if args and re.fullmatch(r"[A-Za-z]+", args[0]) else ""
        if hint:  # `prun stauts`: a mistyped command, not an app (an app is MODULE:ATTR)
            print(f"prun: error: unknown command {args[0]!r}{hint}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        args.insert(0, "run")
    try:
        cli.main(args, prog_name="prun", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        print(f"prun: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except PrunError as exc:
        print(f"prun: error: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)
