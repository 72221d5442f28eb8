"""The one Config behind the command line, PRUN_* environment variables and config files.

Precedence: command line > environment > config file (--config FILE, or [tool.prun] in
pyproject.toml) > defaults. Every setting is one field below with one parser, whatever its source.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prun.cluster.errors import UsageError
from prun.runtime.loader import INTERFACES
from prun.runtime.options import WorkerOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_BIND = "127.0.0.1:8000"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def parse_instances(value: Any) -> int:
    """N, 'max' or 0 (one per CPU), or -N (CPUs minus N, at least 1), as PM2 takes them."""
    text = str(value).strip().lower()
    if text in ("max", "0"):
        return cpu_count()
    if re.fullmatch(r"-?\d+", text):
        n = int(text)
        return max(1, cpu_count() + n) if n < 0 else n
    raise UsageError(f"invalid instances {value!r}: expected a number, 'max', 0 or -N")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_binds(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    binds = [str(b).strip() for b in items if str(b).strip()]
    if not binds:
        raise ValueError("expected at least one address")
    return binds


def parse_env(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    items = value if isinstance(value, (list, tuple)) else [value]
    env: dict[str, str] = {}
    for item in items:
        key, sep, val = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        env[key] = val
    return env


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _positive(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a {'whole ' if kind is int else ''}number, got {value!r}") from None
        if isinstance(value, bool) or number < 0:
            raise ValueError(f"expected a non-negative number, got {value!r}")
        return number

    return parse


_int = _positive(int)
_float = _positive(float)


@dataclass
class Config:
    """Every setting of a prun master, and the worker options derived from them."""

    app: str = ""
    instances: int = 1
    bind: list[str] = field(default_factory=lambda: [DEFAULT_BIND])
    chdir: str = "."
    factory: bool = False
    interface: str = "auto"
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    backlog: int = 2048
    balance: str = "leastconn"  # chosen by benchmarks/results/cluster-summary.md
    graceful_timeout: float = 25.0  # below Kubernetes' 30 s grace period
    ready_timeout: float = 60.0
    timeout: float = 30.0
    reload_batch: int = 1
    max_requests: int = 0
    max_requests_jitter: int = 0
    pid_file: str = ""
    log_format: str = "text"
    log_file: str = ""
    container: bool = False
    health: str = ""
    # HTTP server (worker side)
    lifespan: str = "auto"
    root_path: str = ""
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    threads: int = 8
    keepalive_timeout: float = 5.0
    limit_request_line: int = 8190
    limit_request_header_size: int = 16384
    limit_request_body: int = 100 * 1024 * 1024
    limit_concurrency: int = 0
    access_log: str = ""
    # Where the settings came from (not settings themselves).
    config_file: str = ""

    def worker_options(self, slot: int, generation: int, max_requests: int) -> WorkerOptions:
        """What a worker of this config is told at boot."""
        return WorkerOptions(
            app=self.app,
            chdir=os.path.abspath(self.chdir),
            factory=self.factory,
            interface=self.interface,
            name=self.name,
            slot=slot,
            generation=generation,
            heartbeat_interval=min(1.0, self.timeout / 4) if self.timeout else 1.0,
            graceful_timeout=self.graceful_timeout,
            balance=self.balance,
            max_requests=max_requests,
            lifespan=self.lifespan,
            root_path=self.root_path,
            proxy_headers=self.proxy_headers,
            forwarded_allow_ips=self.forwarded_allow_ips,
            threads=self.threads,
            keepalive_timeout=self.keepalive_timeout,
            limit_request_line=self.limit_request_line,
            limit_request_header_size=self.limit_request_header_size,
            limit_request_body=self.limit_request_body,
            limit_concurrency=self.limit_concurrency,
            access_log=self.access_log,
            backlog=self.backlog,
            env=dict(self.env),
        )


# One parser per setting; the same one serves the command line, PRUN_* variables and files.
PARSERS: dict[str, Callable[[Any], Any]] = {
    "app": str,
    "instances": parse_instances,
    "bind": parse_binds,
    "chdir": str,
    "factory": parse_bool,
    "interface": _choice(*INTERFACES),
    "name": str,
    "env": parse_env,
    "backlog": _int,
    "balance": _choice("shared", "leastconn"),
    "graceful_timeout": _float,
    "ready_timeout": _float,
    "timeout": _float,
    "reload_batch": _int,
    "max_requests": _int,
    "max_requests_jitter": _int,
    "pid_file": str,
    "log_format": _choice("text", "json"),
    "log_file": str,
    "container": parse_bool,
    "health": str,
    "lifespan": _choice("auto", "on", "off"),
    "root_path": str,
    "proxy_headers": parse_bool,
    "forwarded_allow_ips": str,
    "threads": _int,
    "keepalive_timeout": _float,
    "limit_request_line": _int,
    "limit_request_header_size": _int,
    "limit_request_body": _int,
    "limit_concurrency": _int,
    "access_log": lambda v: "" if str(v).lower() in ("", "off", "false", "0") else _choice("common", "json")(v),
}
assert set(PARSERS) == {f.name for f in dataclasses.fields(Config)} - {"config_file"}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse(name: str, value: Any, source: str) -> Any:
    try:
        return PARSERS[name](value)
    except UsageError:
        raise
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid {source}: {exc}") from None


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
    if os.path.basename(path) == "pyproject.toml":
        data = data.get("tool", {}).get("prun", {})
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in PARSERS:
            raise UsageError(f"unknown setting {key!r} in {path}")
        settings[name] = value
    return settings


def from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """PRUN_* variables, plus PORT for the default bind (0.0.0.0:$PORT, as platforms expect)."""
    settings = {
        name: environ[f"PRUN_{name.upper()}"] for name in PARSERS if f"PRUN_{name.upper()}" in environ
    }
    if "bind" not in settings and environ.get("PORT"):
        settings["bind"] = f"0.0.0.0:{environ['PORT']}"
    return settings


def build(cli: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """The Config for these command-line values (None: not given) and this environment."""
    environ = os.environ if environ is None else environ
    given = {k: v for k, v in cli.items() if v is not None and v != () and k != "config"}
    config_path = cli.get("config") or environ.get("PRUN_CONFIG") or ""
    chdir = given.get("chdir") or environ.get("PRUN_CHDIR") or "."
    if not os.path.isdir(chdir):
        raise UsageError(f"--chdir {chdir}: no such directory")
    if not config_path and os.path.isfile(os.path.join(chdir, "pyproject.toml")):
        candidate = os.path.join(chdir, "pyproject.toml")
        if read_file(candidate):
            config_path = candidate
    values: dict[str, Any] = {}
    if config_path:
        for name, value in read_file(config_path).items():
            values[name] = _parse(name, value, f"{name} in {config_path}")
    for name, value in from_environ(environ).items():
        values[name] = _parse(name, value, f"PRUN_{name.upper()}")
    for name, value in given.items():
        values[name] = _parse(name, value, f"{_option(name)} {value!r}" if name != "app" else "app")
    config = Config(**values, config_file=config_path)
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
