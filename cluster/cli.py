"""The `prun` command: parses options into the one Config and runs a master in the foreground.

Every failure a user can cause ends here as one line on stderr and an exit code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from prun.cluster import config as config_mod
from prun.cluster.errors import EXIT_USAGE, PrunError

COMMANDS = ("run",)


def _write_pid_file(path: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise PrunError(f"cannot write pid file {path}: {exc.strerror}") from None


def _remove_pid_file(path: str) -> None:
    try:
        with open(path) as fh:
            if fh.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass


def serve(cli_values: dict[str, Any]) -> int:
    """Build the config, bind the listeners, run the master; the exit code."""
    from prun.cluster import listeners as listeners_mod
    from prun.cluster import master
    from prun.cluster.log import Log
    from prun.cluster.notify import Notifier

    environ = dict(os.environ)
    config = config_mod.build(cli_values, environ)
    if config.health:
        from prun.cluster.health import parse_address

        parse_address(config.health)
    log = Log(config.log_format, app=config.name or config.app)
    if config.log_file:
        os.close(log.open_file(config.log_file))
    for spec in config.bind:
        listeners_mod.parse(spec)  # every address is checked before any is bound
    listeners = listeners_mod.systemd_listeners(os.environ)
    if not listeners or cli_values.get("bind"):
        listeners += listeners_mod.bind_all(config.bind, config.backlog)
    try:
        import setproctitle

        setproctitle.setproctitle("prun master " + " ".join(sys.argv[1:]))
    except ImportError:  # pragma: no cover
        pass
    for listener in listeners:
        log.info(f"listening on {listener.address}")
    if config.pid_file:
        _write_pid_file(config.pid_file)
    try:
        notifier = Notifier.from_environ()
        return master.run(config, listeners, log, lambda: config_mod.build(cli_values, environ), notifier)
    finally:
        if config.pid_file:
            _remove_pid_file(config.pid_file)
        for listener in listeners:
            if listener.kind == "unix" and listener.spec.startswith("unix:"):
                try:
                    os.unlink(listener.spec[5:])
                except OSError:
                    pass
            listener.sock.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="prun", prog_name="prun")
def cli() -> None:
    """prun: a pre-fork cluster runtime for Python network services.

    \b
      prun app:server -i max        one worker per CPU, master in the foreground
      kill -HUP <master pid>        rolling reload onto the new code, nothing lost
    """


@cli.command("run")
@click.argument("app", required=False)
@click.option("-i", "--instances", help="Workers: N, 'max' or 0 (one per CPU), -N (CPUs minus N).  [default: 1]")
@click.option("-b", "--bind", multiple=True,
              help="HOST:PORT, [::]:PORT, unix:PATH or fd://N; repeatable.  [default: 127.0.0.1:8000, "
                   "or 0.0.0.0:$PORT]")
@click.option("--chdir", help="Directory to import the app from (first on sys.path).")
@click.option("--factory", is_flag=True, default=None, help="APP is a factory: call it to get the app.")
@click.option("--interface", help="auto, asgi, wsgi, stream or protocol.  [default: auto]")
@click.option("--name", help="The app's name in titles and logs.")
@click.option("--env", multiple=True, metavar="KEY=VALUE", help="Set a variable in the workers; repeatable.")
@click.option("--config", "config", help="A TOML config file (or [tool.prun] in pyproject.toml).")
@click.option("--backlog", help="Listen backlog.  [default: 2048]")
@click.option("--balance", help="leastconn (the master hands each connection to the least busy worker) or "
              "shared (the kernel balances).  [default: leastconn]")
@click.option("--graceful-timeout", help="Seconds a draining worker may take.  [default: 25]")
@click.option("--ready-timeout", help="Seconds a new worker may take to become ready.  [default: 60]")
@click.option("--timeout", help="Seconds without a heartbeat before a worker is aborted (0: never).  [default: 30]")
@click.option("--reload-batch", help="Workers replaced at a time during a reload.  [default: 1]")
@click.option("--max-requests", help="Replace a worker after this many requests (0: never).  [default: 0]")
@click.option("--max-requests-jitter", help="Add up to this many to --max-requests, per worker.  [default: 0]")
@click.option("--pid-file", help="Write the master's pid here.")
@click.option("--log-format", help="text or json (one object per line, workers' output too).  [default: text]")
@click.option("--log-file", help="Append the master's and workers' output to this file; USR1 reopens it.")
@click.option("--container", is_flag=True, default=None, help="Run as a container's PID 1 (implied when prun is "
              "PID 1): reap every child, pass the app's exit status through.")
@click.option("--health", metavar="[HOST:]PORT", help="Serve /livez, /readyz and /status (loopback by default).")
@click.option("--lifespan", help="ASGI lifespan: auto, on or off.  [default: auto]")
@click.option("--root-path", help="ASGI root_path / WSGI SCRIPT_NAME for apps behind a path prefix.")
@click.option("--proxy-headers", is_flag=True, default=None, help="Trust X-Forwarded-For/-Proto from "
              "--forwarded-allow-ips.")
@click.option("--forwarded-allow-ips", help="Comma-separated peers trusted for proxy headers, or *.")
@click.option("--threads", help="WSGI thread pool size per worker.  [default: 8]")
@click.option("--keepalive-timeout", help="Seconds an idle keep-alive connection stays open.  [default: 5]")
@click.option("--limit-request-line", help="Longest request line, bytes (414 beyond).  [default: 8190]")
@click.option("--limit-request-header-size", help="Largest header section, bytes (431 beyond).  [default: 16384]")
@click.option("--limit-request-body", help="Largest request body, bytes (413 beyond).  [default: 100 MiB]")
@click.option("--limit-concurrency", help="Requests in progress per worker before 503 (0: no limit).")
@click.option("--access-log", help="off, common or json.  [default: off]")
def run_command(**values: Any) -> None:
    """Serve APP (MODULE:ATTR) with a master in the foreground."""
    sys.exit(serve(values))


def main(argv: list[str] | None = None) -> None:
    """Entry point: `prun MODULE:ATTR ...` is `prun run MODULE:ATTR ...`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS and args[0] not in ("-h", "--help", "--version"):
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
