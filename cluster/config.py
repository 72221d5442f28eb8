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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prun.cluster.errors import UsageError
from prun.cluster.log import Log
from prun.cluster.options import (
    BY_NAME,
    DEFAULT_HOST,
    DEFAULT_PORT,
    FILE_KEYS,
    OPTIONS,
    Config,
    Option,
    cpu_count,
    from_file_key,
    nearest,
    parse,
    parse_env,
    parse_instances,
)
from prun.runtime import install_hint

if TYPE_CHECKING:
    from prun.cluster.gunicorn import Hooks

# Config and the parsers live in the option table (cluster/options.py); they stay importable from here.
__all__ = ["Config", "Reconfigure", "build", "cpu_count", "from_environ", "parse_env", "parse_instances",
           "read_file", "validate"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class FileExtras:
    """What a gunicorn config file gives beside settings, for the start only (a reload re-reads the settings)."""

    notes: list[str] = field(default_factory=list)  # one line per setting or hook prun ignores, and why
    hooks: Hooks | None = None  # the server hooks it defines that prun runs


def read_file(path: str, extras: FileExtras | None = None) -> dict[str, Any]:
    """The settings in a config file: TOML's top-level keys, [tool.prun] of a pyproject.toml, or the settings
    of a gunicorn config file (*.py, executed: cluster/gunicorn.py)."""
    if path.endswith(".py"):
        from prun.cluster import gunicorn

        loaded = gunicorn.load(path)
        if extras is not None:
            extras.notes, extras.hooks = loaded.notes, loaded.hooks
        return loaded.settings
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
        option = from_file_key(key)
        if option is None:
            hint = nearest(key.replace("-", "_"), FILE_KEYS)
            raise UsageError(f"unknown setting {key!r} in {path}{hint.replace('_', '-')}")
        if option.name in settings:
            raise UsageError(f"{key!r} in {path} sets {option.key} a second time")
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


# prun's variables that are no option's: the daemon's home, and what a master tells its workers
OTHER_VARIABLES = frozenset({"PRUN_HOME", "PRUN_WORKER", "PRUN_MASTER_PID", "PRUN_CHANNEL_FD", "PRUN_APP_TOKEN",
                             "PRUN_APP_NAME", BY_NAME["instance_var"].default})


def mistyped_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each PRUN_ variable that is no option's but looks like one's, or spells an alias
    (PRUN_WORKERS): otherwise the setting it was meant for is silently not made. Others are left alone."""
    known = {option.env for option in OPTIONS}
    notes = []
    for name in sorted(environ):
        if not name.startswith("PRUN_") or name in known or name in OTHER_VARIABLES:
            continue
        meant = from_file_key(name[5:].lower())  # an alias's spelling, as a config file takes it (workers)
        hint = f" (did you mean {meant.env}?)" if meant else nearest(name, known, cutoff=0.8)
        if hint:
            notes.append(f"{name} is not one of prun's variables, and is ignored{hint}")
    return notes


def _source(option: Option, value: Any) -> str:
    return "app" if option.argument else f"{option.long} {value!r}"


def fold_host_port(layer: dict[str, Any], source: str, environ: Mapping[str, str]) -> None:
    """uvicorn's --host and --port of one source (the command line, the environment, a file) as its bind;
    either alone takes the other from the default bind (127.0.0.1:8000, or 0.0.0.0:$PORT)."""
    host, port = layer.pop("host", ""), layer.pop("port", "")
    if not host and not port:
        return
    if "bind" in layer:
        raise UsageError(f"--bind and --host/--port both given {source}: give one or the other")
    platform = environ.get("PORT", "")
    layer["bind"] = [f"{host or ('0.0.0.0' if platform else DEFAULT_HOST)}:{port or platform or DEFAULT_PORT}"]


def build(cli: Mapping[str, Any], environ: Mapping[str, str] | None = None, extras: FileExtras | None = None) -> Config:
    """The Config for these command-line values (None: not given) and this environment; `extras` gets what a
    gunicorn config file gives beside its settings."""
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
        layer = {name: parse(name, value, f"{name} in {config_path}")
                 for name, value in read_file(config_path, extras).items()}
        fold_host_port(layer, f"in {config_path}", environ)
        values.update(layer)
    variables = from_environ(environ)
    if extras is not None:
        extras.notes.extend(mistyped_variables(environ))
    layer = {name: parse(name, value, variable) for name, (value, variable) in variables.items()
             if name != "config"}  # the config file: already looked at, above
    if ("host" in layer or "port" in layer) and variables.get("bind", ("", ""))[1] == "PORT":
        del layer["bind"]  # PRUN_HOST or PRUN_PORT say more than PORT's default bind: they take its other half
    fold_host_port(layer, "in the environment", environ)
    values.update(layer)
    layer = {name: parse(name, value, _source(BY_NAME[name], value)) for name, value in given.items()}
    fold_host_port(layer, "on the command line", environ)
    values.update(layer)
    config = Config(**values, config=config_path)
    if config.env_file:
        from prun.cluster.dotenv import read_env_file

        from_file = read_env_file(config.env_file, environ)
        config.env = {**{k: v for k, v in from_file.items() if k not in environ}, **config.env}
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
        raise UsageError(f"--http 2 needs the h2 library, which is not installed: {install_hint('http2')}")
    if config.http != "1" and config.http2_engine == "zttp" and importlib.util.find_spec("zttp") is None:
        from prun.runtime.tls import zttp_missing

        raise UsageError(zttp_missing())
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

