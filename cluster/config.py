"""The one Config behind the command line, PRUN_* environment variables and config files.

Precedence: command line > environment (PRUN_<NAME>, then PORT for the bind and WEB_CONCURRENCY for
the instances) > config file (--config FILE, or [tool.prun] in pyproject.toml) > defaults. The
options, their parsers and defaults are the table in cluster/options.py; this module only merges.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from prun.cluster.errors import UsageError
from prun.cluster.log import Log
from prun.cluster.options import BY_NAME, OPTIONS, Config, Option, cpu_count, parse, parse_env, parse_instances

# Config and the parsers live in the option table (cluster/options.py); they stay importable from here.
__all__ = ["Config", "Reconfigure", "build", "cpu_count", "from_environ", "parse_env", "parse_instances",
           "read_file", "validate"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_file(path: str) -> dict[str, Any]:
    """The settings in a TOML config file: top-level keys, or [tool.prun] of a pyproject.toml."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"cannot read config file {path}: no such file") from None
    except PermissionError:
        raise UsageError(f"cannot read config file {path}: permission denied") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read config file {path}: it is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cannot read config file {path}: invalid TOML ({exc})") from None
    except RecursionError:
        raise UsageError(f"cannot read config file {path}: its arrays or tables are nested too deeply") from None
    if os.path.basename(path) == "pyproject.toml":
        data = data.get("tool", {}).get("prun", {})
    settings: dict[str, Any] = {}
    for key, value in data.items():
        option = BY_NAME.get(key.replace("-", "_"))
        if option is None or not option.file:
            raise UsageError(f"unknown setting {key!r} in {path}")
        settings[option.name] = value
    return settings


def from_environ(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Settings from the environment: name -> (value, the variable it came from).

    PRUN_<NAME> first; below it an option's fallback variable (PORT gives the bind 0.0.0.0:$PORT and
    WEB_CONCURRENCY the instances, as platforms and other servers expect).
    """
    settings: dict[str, tuple[str, str]] = {}
    for option in OPTIONS:
        if option.env in environ:
            settings[option.name] = (environ[option.env], option.env)
        elif option.fallback_env and environ.get(option.fallback_env):
            settings[option.name] = (option.fallback_format.format(environ[option.fallback_env]),
                                     option.fallback_env)
    return settings


def _source(option: Option, value: Any) -> str:
    return "app" if option.argument else f"{option.long} {value!r}"


def build(cli: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """The Config for these command-line values (None: not given) and this environment."""
    environ = os.environ if environ is None else environ
    given = {k: v for k, v in cli.items() if v is not None and v != () and k != "config"}
    config_path = cli.get("config") or environ.get(BY_NAME["config"].env) or ""
    chdir = given.get("chdir") or environ.get(BY_NAME["chdir"].env) or "."
    if not os.path.isdir(chdir):
        raise UsageError(f"--chdir {chdir}: no such directory")
    if not config_path and os.path.isfile(os.path.join(chdir, "pyproject.toml")):
        candidate = os.path.join(chdir, "pyproject.toml")
        if read_file(candidate):
            config_path = candidate
    values: dict[str, Any] = {}
    if config_path:
        for name, value in read_file(config_path).items():
            values[name] = parse(name, value, f"{name} in {config_path}")
    for name, (value, variable) in from_environ(environ).items():
        if name != "config":  # already looked at, above
            values[name] = parse(name, value, variable)
    for name, value in given.items():
        values[name] = parse(name, value, _source(BY_NAME[name], value))
    config = Config(**values, config=config_path)
    validate(config)
    return config


def validate(config: Config) -> None:
    if not config.app:
        raise UsageError("no app given: prun MODULE:ATTR (for example: prun app:server)")
    module, sep, attr = config.app.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", module) or not re.fullmatch(r"[A-Za-z_]\w*", attr):
        raise UsageError(f"invalid app {config.app!r}: expected MODULE:ATTR, for example app:server")
    if config.instances < 1:
        raise UsageError("--instances must be at least 1")
    if config.reload_batch < 1:
        raise UsageError("--reload-batch must be at least 1")
    if config.http == "2" and importlib.util.find_spec("h2") is None:
        raise UsageError("--http 2 needs the h2 library, which is not installed: pip install 'prun[http2]'")
    if config.http2_max_streams < 1:
        raise UsageError("--http2-max-streams must be at least 1")


def check_tls(config: Config) -> None:
    """At start: the TLS files exist, are readable and match. Workers load them again at each boot."""
    from prun.runtime import tls

    try:
        tls.server_context(config.worker_options(0, 0, 0))  # built to check, then dropped with its key
    except tls.TlsError as exc:
        raise UsageError(str(exc)) from None


class Reconfigure:
    """What a master calls on a reload (HUP): the Config re-read from every source.

    Options the table marks reloadable take their new value (one line each says so); any other
    option that changed keeps its running value, and one line each says that it needs a restart.
    """

    def __init__(self, cli: Mapping[str, Any], environ: Mapping[str, str], running: Config, log: Log) -> None:
        self.cli = dict(cli)
        self.environ = dict(environ)
        self.log = log
        self.running = running
        self.asked = dataclasses.replace(running)  # what the sources said last time, before keeping

    def __call__(self) -> Config:
        new = build(self.cli, self.environ)
        asked = dataclasses.replace(new, bind=list(new.bind), env=dict(new.env))
        for option in OPTIONS:
            was, now = getattr(self.asked, option.name), getattr(new, option.name)
            running = getattr(self.running, option.name)
            if not option.reload:
                setattr(new, option.name, running)
                if now != was:
                    self.log.info(f"reload: {option.label} changed to {option.describe(now)}; it needs a restart "
                                  f"(kept {option.describe(running)})")
            elif now != running:
                changed = (f"changed to {option.describe(now)} (was {option.describe(running)})" if option.show_values
                           else f"changed (keys now: {option.describe(now)})" if isinstance(now, dict) else "changed")
                self.log.info(f"reload: {option.label} {changed}")
        self.asked, self.running = asked, new
        return new

