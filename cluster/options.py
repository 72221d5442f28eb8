"""The one table of prun's options: `Config`, whose every field is one option of `prun run`.

A row is a typed field, `name: type = option(parser, default, help, ...)`: its name and type are the
option's, `option` declares the rest (flags, metavar, whether workers get it, whether a reload may
change it; see `Option`). From the table come the click options of `prun run` and its `--help`
(`click_options`), the `PRUN_<NAME>` environment variables and the TOML keys (cluster/config.py merges
them), the options a worker is told at boot (`Config.worker_options`), what a reload applies or reports
as needing a restart (`config.Reconfigure`), and the options table of the docs (docs/options.md) (`readme_table`).

To add an option, add its row to `Config`. A worker option (`worker=True`) also needs a field of the same
name and default in `WorkerOptions` (runtime/options.py: workers do not import cluster/). Then run
`python -m prun.cluster.options` to regenerate the options table of the docs (docs/options.md); tests/test_options.py fails
until WorkerOptions and docs/options.md agree with the table.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from prun.cluster import names
from prun.cluster.cpus import cpu_count as cpu_count  # re-exported: -i max counts these
from prun.cluster.errors import UsageError
from prun.runtime.logrecord import TIME_STYLES
from prun.runtime.options import INTERFACES, WorkerOptions

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", "8000"  # uvicorn's and gunicorn's too
DEFAULT_BIND = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
# --log-level: uvicorn's and gunicorn's words, as prun's four levels (cluster/log.py)
LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warning": "warning", "error": "error",
              "critical": "error"}


# ---- parsers: one per option, the same for the command line, the environment and files ------------


def parse_instances(value: Any) -> int:
    """N, 'max' or 0 (one per CPU), or -N (CPUs minus N, at least 1), as PM2 takes them.

    The CPUs are those prun may use: its affinity mask or its cgroup's CPU quota, the smaller (cluster/cpus.py).
    """
    text = str(value).strip().lower()
    if text in ("max", "0"):
        return cpu_count()
    if re.fullmatch(r"-?\d+", text):
        n = int(text)
        return max(1, cpu_count() + n) if n < 0 else n
    raise ValueError(f"expected a number, 'max', 0 or -N, got {value!r}")


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


def parse_str(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def parse_name(value: Any) -> str:
    """An app's name (cluster/names.py's rule); '' for none given (the app's module names it)."""
    text = parse_str(value)
    return names.check(text) if text else ""


def parse_mode(value: Any) -> str:
    """Permission bits in octal digits ("660", "0660"), as text: a TOML 660 or 0o660 is refused as ambiguous."""
    if not isinstance(value, str):
        raise ValueError(f"expected octal digits in quotes, such as '660', got {value!r}")
    text = value.strip().lower().removeprefix("0o")
    if not text:
        return ""
    if not re.fullmatch(r"[0-7]{1,4}", text) or int(text, 8) > 0o777:
        raise ValueError(f"expected permissions in octal from 000 to 777, such as 660, got {value!r}")
    return f"{int(text, 8):04o}"


def parse_group(value: Any) -> str:
    """A group's name or number, checked to exist (a number needs no name)."""
    text = parse_str(value).strip()
    if text and not text.isdigit():
        import grp

        try:
            grp.getgrnam(text)
        except KeyError:
            raise ValueError(f"no group named {text!r} on this machine") from None
    return text


def parse_size(value: Any) -> int:
    """Bytes from 123, "512K", "300M" or "1G" (powers of 1024); 0 is allowed (none, never)."""
    text = str(value).strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        size = int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise ValueError(f"expected bytes, or a number with K, M or G, got {value!r}") from None
    if size < 0:
        raise ValueError(f"expected a size of 0 or more, got {value!r}")
    return size


def parse_host(value: Any) -> str:
    """uvicorn's --host: an address or a name, as a --bind takes it ('::' is written [::])."""
    text = parse_str(value).strip()
    if text.startswith("unix:") or "/" in text:
        raise ValueError(f"expected a host name or an address, got {value!r} (a unix socket is --bind unix:PATH)")
    return f"[{text}]" if ":" in text and not text.startswith("[") else text


def parse_port(value: Any) -> str:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > 65535:
        raise ValueError(f"expected a port number from 0 to 65535, got {value!r}")
    return str(int(text))


def parse_log_level(value: Any) -> str:
    """One of prun's levels, from uvicorn's or gunicorn's words (trace is debug, critical is error)."""
    text = str(value).strip().lower()
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return LOG_LEVELS[text]


def parse_cron(value: Any) -> str:
    """A cron expression, checked when read (not at 3 in the morning); '' for none."""
    text = str(value).strip()
    if text:
        from prun.cluster.cron import Schedule

        Schedule.parse(text)  # ValueError: what is wrong with it
    return text


class Choice:
    """A parser for one of a few words (its metavar in --help lists them)."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def __call__(self, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        return text


def _non_negative(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a {'whole ' if kind is int else ''}number, got {value!r}") from None
        if isinstance(value, bool) or number < 0:
            raise ValueError(f"expected a non-negative number, got {value!r}")
        return number

    return parse


parse_int = _non_negative(int)
parse_float = _non_negative(float)


def parse_backlog(value: Any) -> int:
    number = parse_int(value)
    if number > 65535:
        raise ValueError(f"expected at most 65535 (the kernel caps it at net.core.somaxconn), got {value!r}")
    return int(number)


def parse_ms(value: Any) -> float:
    """Seconds from milliseconds, as PM2 takes them (1000), or with a unit (1.5s, 200ms)."""
    text = str(value).strip().lower()
    scale = 1.0 if text.endswith("s") and not text.endswith("ms") else 0.001
    try:
        number = float(text.removesuffix("ms").removesuffix("s"))
    except ValueError:
        raise ValueError(f"expected milliseconds (1000) or a duration (1.5s), got {value!r}") from None
    if number < 0:
        raise ValueError(f"expected a duration of 0 or more, got {value!r}")
    return number * scale


def parse_codes(value: Any) -> list[int]:
    """Exit codes: repeated, or comma- or space-separated (0 2 or 0,2)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    codes = []
    for item in items:
        for word in str(item).replace(",", " ").split():
            if not word.isdigit() or int(word) > 255:
                raise ValueError(f"expected exit codes from 0 to 255, got {word!r}")
            codes.append(int(word))
    return codes


def parse_signal(value: Any) -> str:
    """A signal's name (SIGINT, INT, 2 all give SIGINT)."""
    import signal

    text = str(value).strip().upper()
    try:
        number = int(text) if text.isdigit() else signal.Signals["SIG" + text.removeprefix("SIG")].value
        return signal.Signals(number).name
    except (KeyError, ValueError):
        raise ValueError(f"expected a signal such as SIGINT, SIGTERM or 15, got {value!r}") from None


def parse_variable_name(value: Any) -> str:
    text = str(value).strip()
    if not text or not (text[0].isalpha() or text[0] == "_") or not all(c.isalnum() or c == "_" for c in text):
        raise ValueError(f"expected a variable name (letters, digits, _), got {value!r}")
    return text


def parse_tls_profile(value: Any) -> str:
    if str(value).strip().lower() in ("", "none", "default"):
        return ""
    return Choice("modern", "intermediate")(value)


def parse_line_size(value: Any) -> int:
    size = parse_size(value)
    if size < 256:
        raise ValueError(f"expected at least 256 bytes, got {value!r}")
    return size


def parse_access_log_format(value: Any) -> str:
    """A format string of gunicorn's access log atoms, checked when read."""
    from prun.runtime.http.logs import check_format

    text = parse_str(value)
    why = check_format(text) if text else ""
    if why:
        raise ValueError(why.removeprefix("invalid --access-log-format "))
    return text


def parse_access_log(value: Any) -> str:
    if str(value).strip().lower() in ("", "off", "false", "0"):
        return ""
    return Choice("common", "json")(value)


# ---- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of `prun run`: what `option(...)` declares for a field of Config."""

    name: str  # the Config (and WorkerOptions) field; gives --name-with-dashes, PRUN_NAME, TOML key name-with-dashes
    parse: Callable[[Any], Any]  # text from the command line or environment, or a TOML value -> the value
    default: Any
    help: str
    short: str = ""  # e.g. "-i"
    metavar: str = ""
    worker: bool = False  # workers are told it at boot (a WorkerOptions field)
    reload: bool = False  # a reload (HUP) applies a new value; otherwise it needs a restart and is kept
    multiple: bool = False  # the flag may repeat
    flag: bool = False  # a switch without a value
    argument: bool = False  # the positional argument (APP), not a flag
    file: bool = True  # may be set in a config file
    shown_default: str | None = None  # what --help and the README show as the default, if not the value
    fallback_env: str = ""  # an environment variable below PRUN_NAME, e.g. WEB_CONCURRENCY for instances
    fallback_format: str = "{}"  # how that variable's value becomes this option's text
    show_values: bool = True  # False: a reload names the changed keys, not their values (secrets)
    bare: str = ""  # the value of the flag given without one (--watch alone); '' : a value is required
    aliases: tuple[str, ...] = ()  # other servers' spellings of it (-w, --workers); a long one is a file key too

    @property
    def flags(self) -> tuple[str, ...]:
        return ((self.short, self.long) if self.short else (self.long,)) + self.aliases

    @property
    def keys(self) -> tuple[str, ...]:
        """Its keys in a config file: its own, and its long aliases (workers = 4)."""
        return (self.key, *(alias[2:] for alias in self.aliases if alias.startswith("--")))

    @property
    def long(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """How messages name it: its long flag, or APP for the argument."""
        return self.metavar if self.argument else self.long

    @property
    def env(self) -> str:
        return "PRUN_" + self.name.upper()

    @property
    def key(self) -> str:
        """Its key in a TOML config file (underscores are accepted too)."""
        return self.name.replace("_", "-")

    def default_value(self) -> Any:
        """A fresh copy of the default (lists and dicts are not shared between configs)."""
        return copy.deepcopy(self.default)

    def default_text(self) -> str:
        """The default as --help and the README show it; '' when there is nothing to show."""
        if self.shown_default is not None:
            return self.shown_default
        if self.flag or self.default in ("", [], {}, ()):
            return ""
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)

    def describe(self, value: Any) -> str:
        """A value as a reload line shows it."""
        if not self.show_values and isinstance(value, str):
            return "(hidden)" if value else "(none)"
        if isinstance(value, dict):
            items = sorted(value.items())
            return ", ".join(f"{k}={v}" if self.show_values else k for k, v in items) or "(none)"
        if isinstance(value, list):
            return ",".join(map(str, value))
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value) if value != "" else "(none)"


def option(parse: Callable[[Any], Any], default: Any, help: str, **declaration: Any) -> Any:
    """One row of the table: a field of Config, with its Option (all but the name) in the field's metadata."""
    row = {"option": Option("", parse, default, help, **declaration)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=row)
    return dataclasses.field(default=default, metadata=row)


@dataclass
class Config:
    """Every setting of a prun master, and the option table: one field per option, in --help's order."""

    app: str = option(parse_str, "", "MODULE:ATTR to serve, e.g. app:server.", argument=True, worker=True,
        metavar="APP")
    instances: int = option(parse_instances, 1, "Workers: N, 'max' or 0 (one per CPU prun may use: the "
        "affinity mask or the cgroup CPU quota, rounded up, the smaller), -N (CPUs minus N, at least 1). A restart "
        "changes it; TTIN/TTOU scale a running master.", short="-i", metavar="N",
        shown_default="1, or $WEB_CONCURRENCY", fallback_env="WEB_CONCURRENCY", aliases=("-w", "--workers"))
    bind: list[str] = option(parse_binds, [DEFAULT_BIND], "HOST:PORT, [::]:PORT, unix:PATH or fd://N; repeatable. "
        "systemd socket activation (LISTEN_FDS) is honoured.", short="-b", metavar="ADDRESS", multiple=True,
        shown_default=f"{DEFAULT_BIND}, or 0.0.0.0:$PORT", fallback_env="PORT", fallback_format="0.0.0.0:{}")
    host: str = option(parse_host, "", f"uvicorn's --host: makes the bind HOST:PORT with --port; alone, with port "
        f"{DEFAULT_PORT} (or $PORT). Not with --bind.", metavar="HOST")
    port: str = option(parse_port, "", f"uvicorn's --port: makes the bind HOST:PORT with --host; alone, with host "
        f"{DEFAULT_HOST} (0.0.0.0 if $PORT is set). Not with --bind.", metavar="PORT")
    chdir: str = option(parse_str, ".", "Directory to import the app from (first on sys.path).", metavar="DIR",
        worker=True, reload=True)
    factory: bool = option(parse_bool, False, "APP is a factory: call it to get the app.", flag=True, worker=True,
        reload=True)
    interface: str = option(Choice(*INTERFACES), "auto", "How to serve APP (auto: tell from its shape).",
        worker=True, reload=True)
    name: str = option(parse_name, "", "The app's name in its logs and JSON records (the master's title shows it "
        f"with its arguments): {names.RULE}.", worker=True)
    env: dict[str, str] = option(parse_env, {}, "Set a variable in the workers; repeatable (a table in a config "
        "file).", metavar="KEY=VALUE", multiple=True, worker=True, reload=True, show_values=False)
    env_file: str = option(parse_str, "", "A dotenv file (KEY=VALUE lines) read into the workers' environment, as "
        "uvicorn's: a variable prun's environment has keeps its value, --env beats both; a reload re-reads it.",
        metavar="FILE", reload=True)
    config: str = option(parse_str, "", "A TOML config file (or [tool.prun] of pyproject.toml), or a gunicorn "
        "config file (*.py, executed as gunicorn does: docs/from-gunicorn.md); a reload re-reads it.", short="-c",
        metavar="FILE", file=False, shown_default="pyproject.toml's [tool.prun], if any")
    backlog: int = option(parse_backlog, 2048, "Listen backlog.", worker=True)
    unix_mode: str = option(parse_mode, "", "Permissions of each unix: socket --bind makes, in octal: 660 lets "
        "--unix-group connect too, e.g. a proxy's user (connecting takes write permission). Without it, as the "
        "umask leaves them (0700 under prun start).", metavar="MODE")
    unix_group: str = option(parse_group, "", "The group (a name or a number) of each unix: socket --bind makes "
        "(default: prun's own).", metavar="GROUP")
    balance: str = option(Choice("leastconn", "shared"), "leastconn", "leastconn: the master hands each connection "
        "to the least busy worker (a lone worker, or workers taking over 1,000 new connections/s, accept "
        "themselves); shared: the kernel balances.", worker=True)
    graceful_timeout: float = option(parse_float, 25.0, "Seconds a draining worker may take.", worker=True,
        reload=True, aliases=("--timeout-graceful-shutdown",))
    ready_timeout: float = option(parse_float, 60.0, "Seconds a new worker may take to become ready (0: no limit).",
        reload=True)
    timeout: float = option(parse_float, 30.0, "Seconds without a heartbeat before a worker is aborted (0: never).",
        reload=True)
    reload_batch: int = option(parse_int, 1, "Workers replaced at a time during a reload.", reload=True)
    max_restarts: int = option(parse_int, 15, "Give up after this many unstable restarts in a row (a worker, a "
        "fork-mode instance or, under the daemon, the master exiting sooner than --min-uptime after it "
        "started): the app is errored and stops, nothing keeps restarting (0: never give up).", reload=True)
    min_uptime: float = option(parse_ms, 1.0, "A run shorter than this is unstable (milliseconds, as PM2, or "
        "1.5s).", metavar="MS", reload=True, shown_default="1000")
    restart_delay: float = option(parse_ms, 0.0, "Wait this long before each restart (milliseconds; 0: the "
        "exponential backoff below).", metavar="MS", reload=True, shown_default="0")
    exp_backoff_restart_delay: float = option(parse_ms, 0.1, "The first delay of the restart backoff (x1.5 each "
        "time, at most 15 s; back to this after 30 s up).", metavar="MS", reload=True, shown_default="100")
    autorestart: bool = option(parse_bool, True, "Replace a worker (or fork-mode instance; under prun start, the "
        "master too) that exits unasked. --no-autorestart: it is not replaced, the app runs on with the others "
        "and stops once none is left (a reload, a restart or a scale brings them back).", flag=True, reload=True,
        shown_default="on")
    stop_exit_codes: list[int] = option(parse_codes, [], "Exit codes after which a worker (or fork-mode "
        "instance) is not restarted and the app stops; repeatable.", metavar="CODE", multiple=True,
        reload=True)
    instance_var: str = option(parse_variable_name, "PRUN_INSTANCE", "The variable that gives each worker (and "
        "fork-mode instance) its number, 0 to N-1, the same for its slot across reloads and restarts (PM2's "
        "NODE_APP_INSTANCE).", metavar="NAME")
    kill_signal: str = option(parse_signal, "SIGINT", "prun start, fork mode: the signal that asks an instance "
        "(and its process group) to stop, as PM2's kill_signal: a Python script's KeyboardInterrupt and "
        "finally blocks run. Cluster workers drain instead.", metavar="SIGNAL")
    kill_timeout: float = option(parse_ms, 0.0, "prun start, fork mode: then SIGKILL after this long "
        "(milliseconds, as PM2; 0: --graceful-timeout, 5 s by default in fork mode).", metavar="MS",
        shown_default="5000")
    interpreter: str = option(parse_str, "", "prun start, fork mode: the program that runs a script (PM2's "
        "interpreter); a .py script runs with prun's own Python unless this says otherwise.", metavar="PROGRAM")
    max_requests: int = option(parse_int, 0, "Replace a worker after this many requests (0: never).", worker=True,
        reload=True)
    max_requests_jitter: int = option(parse_int, 0, "Add up to this many to --max-requests, per worker.",
        reload=True)
    max_memory_restart: int = option(parse_size, 0, "Replace a worker whose memory passes SIZE (300M, 1G; 0: "
        "never), losslessly, one at a time.", metavar="SIZE", reload=True, shown_default="0")
    watch: str = option(parse_str, "", "Reload (losslessly) when a file under PATHS changes: --watch alone for "
        "--chdir, or --watch=src,lib (the prun-cluster[watch] extra).", metavar="PATHS", bare=".")
    ignore_watch: str = option(parse_str, "", "Comma-separated globs --watch ignores (besides *.pyc, "
        "__pycache__, .git).", metavar="GLOBS")
    cron_restart: str = option(parse_cron, "", "Reload (losslessly) on this cron schedule, e.g. '0 3 * * *' "
        "(six fields: seconds first).", metavar="CRON", reload=False)
    pid_file: str = option(parse_str, "", "Write the master's pid to this file.", metavar="FILE")
    log_level: str = option(parse_log_level, "info", "The least level of prun's own lines (and of a gunicorn "
        "config file's hooks' log): debug adds how the balancing switches, warning and error keep only those "
        "(uvicorn's and gunicorn's trace and critical are debug and error). The app's output and the access log "
        "do not change.", metavar="[debug|info|warning|error]", worker=True)
    log_format: str = option(Choice("text", "json"), "text", "json: one JSON object per event (a line a worker or "
        "instance prints, an exception with its traceback), with time, level, app, worker, pid, stream, message.",
        worker=True)
    log_json_time: str = option(Choice(*TIME_STYLES), "rfc3339", "The time of --log-format json records: RFC 3339 "
        "with milliseconds and zone, or epoch seconds.", worker=True)
    log_file: str = option(parse_str, "", "Append the master's and workers' output to this file; USR1 reopens it "
        "(prun start: the app's out log, default $PRUN_HOME/logs/NAME-out.log).", metavar="FILE")
    error_file: str = option(parse_str, "", "prun start: the app's err log (default: --log-file if given, else "
        "$PRUN_HOME/logs/NAME-err.log).", metavar="FILE")
    log_max_size: int = option(parse_size, 10 << 20, "prun start: rotate a log file before it passes this size "
        "(512K, 10M, 1G; 0: never).", metavar="SIZE", shown_default="10M")
    log_retain: int = option(parse_int, 5, "prun start: rotated files kept per log file.", metavar="N")
    log_compress: bool = option(parse_bool, False, "prun start: gzip rotated log files (all but the newest).",
        flag=True)
    log_rotate_daily: bool = option(parse_bool, False, "prun start: also rotate the log files when the day changes.",
        flag=True)
    merge_logs: bool = option(parse_bool, True, "prun start: the workers' lines in the app's two log files; "
        "--no-merge-logs: each worker's in its own pair (NAME-out-0.log, NAME-err-0.log, ...).", flag=True,
        shown_default="merged")
    time: bool = option(parse_bool, False, "prun start: prefix each log line with the time it was written "
        "(--log-date-format).", flag=True)
    log_date_format: str = option(parse_str, "%Y-%m-%dT%H:%M:%S%z", "The strftime format of --time's prefix.",
        metavar="FORMAT")
    log_max_line: int = option(parse_line_size, 64 << 10, "A line longer than this (bytes) is written as pieces of "
        "at most this size, each piece after the first marked 'prun: ... continued: ' (JSON: part, partial).",
        metavar="SIZE", shown_default="64K")
    container: bool = option(parse_bool, False, "Run as a container's PID 1 (implied when prun is PID 1): reap "
        "every child, pass the app's exit status through.", flag=True)
    health: str = option(parse_str, "", "Serve /livez, /readyz, /status and /metrics at this address: a PORT alone on "
        "loopback (127.0.0.1), HOST:PORT or [V6]:PORT where given, e.g. 0.0.0.0:8081 for kubelet's probes.",
        metavar="[HOST:]PORT")
    lifespan: str = option(Choice("auto", "on", "off"), "auto", "ASGI lifespan events.", worker=True,
        reload=True)
    root_path: str = option(parse_str, "", "ASGI root_path / WSGI SCRIPT_NAME for apps behind a path prefix.",
        metavar="PATH", worker=True, reload=True)
    proxy_headers: bool = option(parse_bool, True, "Take the client's address from X-Forwarded-For and the scheme "
        "from X-Forwarded-Proto when the peer is one of --forwarded-allow-ips, as uvicorn does (gunicorn takes only "
        "the scheme from them).", shown_default="on", flag=True, worker=True, reload=True)
    forwarded_allow_ips: str = option(parse_str, "127.0.0.1", "Comma-separated addresses or networks of the "
        "proxies trusted for proxy headers, or *.", metavar="IPS", worker=True, reload=True,
        shown_default="127.0.0.1, or $FORWARDED_ALLOW_IPS", fallback_env="FORWARDED_ALLOW_IPS")
    threads: int = option(parse_int, 8, "WSGI thread pool size per worker.", worker=True, reload=True)
    keepalive_timeout: float = option(parse_float, 5.0, "Seconds an idle keep-alive connection stays open.",
        metavar="SECONDS", worker=True, reload=True)
    timeout_request_header: float = option(parse_float, 10.0, "Seconds a request head may take to arrive in full, "
        "then 408 and close (0: no bound).", metavar="SECONDS", worker=True, reload=True)
    timeout_write: float = option(parse_float, 60.0, "Seconds a client may read none of a waiting response before "
        "it is dropped (0: no bound).", metavar="SECONDS", worker=True, reload=True)
    limit_request_line: int = option(parse_int, 8190, "Longest request line, bytes (414 beyond).", metavar="BYTES",
        worker=True, reload=True)
    limit_request_header_size: int = option(parse_int, 16384, "Largest header section, bytes (431 beyond).",
        metavar="BYTES", worker=True, reload=True)
    limit_request_body: int = option(parse_int, 100 * 1024 * 1024, "Largest request body, bytes (413 beyond; "
        "0: no limit).", metavar="BYTES", shown_default="104857600 (100 MiB)", worker=True, reload=True)
    limit_concurrency: int = option(parse_int, 0, "Requests in progress per worker before 503 (0: no limit).",
        metavar="N", worker=True, reload=True)
    access_log: str = option(parse_access_log, "", "One line per request: off, common or json.",
        shown_default="off", metavar="[off|common|json]", worker=True, reload=True)
    access_log_format: str = option(parse_access_log_format, "", "The access log line, from gunicorn's access_log_format atoms "
        "(docs: Logs), e.g. '%(h)s \"%(r)s\" %(s)s %(M)sms'; turns --access-log common on.", metavar="FORMAT",
        shown_default="common", worker=True, reload=True)
    access_log_file: str = option(parse_str, "", "Write the access log to this file, not to stdout (prun start: "
        "rotated as the other logs).", metavar="FILE")
    # TLS: every worker loads the files at boot, so a reload after renewing them serves the new ones.
    certfile: str = option(parse_str, "", "Serve TLS with this certificate (PEM, the chain after it); a reload "
        "(HUP) loads it again.", metavar="FILE", worker=True, reload=True)
    keyfile: str = option(parse_str, "", "The private key of --certfile (PEM), if not in that file.",
        metavar="FILE", worker=True, reload=True)
    keyfile_password: str = option(parse_str, "", "The password of an encrypted --keyfile.", metavar="TEXT",
        worker=True, reload=True, show_values=False)
    ca_certs: str = option(parse_str, "", "CA certificates (PEM) that client certificates are verified against.",
        metavar="FILE", worker=True, reload=True)
    cert_reqs: str = option(Choice("none", "optional", "required"), "none", "Client certificates: none, "
        "optional (verified if sent) or required (the handshake fails without one).", worker=True, reload=True)
    ciphers: str = option(parse_str, "", "TLS 1.2 ciphers, in OpenSSL's syntax (default: Python's, or the "
        "--tls-profile's).", metavar="TEXT", worker=True, reload=True)
    tls_groups: str = option(parse_str, "", "Key-exchange groups (curves) offered, in OpenSSL's names separated "
        "by colons, e.g. X25519:prime256v1:secp384r1 (Python before 3.15 takes one; default: OpenSSL's, or the "
        "--tls-profile's).", metavar="GROUPS", worker=True, reload=True)
    tls_profile: str = option(parse_tls_profile, "", "Mozilla's server-side TLS profile: modern "
        "(TLS 1.3 only, X25519: Python 3.11 or later) or intermediate (TLS 1.2 and 1.3, its ciphers); either with "
        "its groups, client's cipher order. Default: Python's and OpenSSL's settings.", metavar="[modern|intermediate]", worker=True,
        reload=True)
    limit_tls_handshakes: int = option(parse_int, 256, "TLS handshakes in progress per worker (0: no limit); "
        "beyond, new connections wait in the kernel's queue, and one running 0.25 s or more is cut for them.",
        metavar="N", worker=True, reload=True)
    # WebSocket (ASGI apps)
    ws: str = option(Choice("auto", "none"), "auto", "WebSocket upgrades for ASGI apps (auto: on if the websockets "
        "library is installed, pip install 'prun-cluster[ws]'; none: refused with 400).", worker=True, reload=True)
    ws_max_size: int = option(parse_int, 16 * 1024 * 1024, "Largest WebSocket message, bytes (closed with 1009 "
        "beyond, as beyond 4,096 fragments; 0: no limit).", metavar="BYTES", shown_default="16777216 (16 MiB)", worker=True, reload=True)
    ws_ping_interval: float = option(parse_float, 20.0, "Seconds between pings on a quiet WebSocket (0: none).",
        metavar="SECONDS", worker=True, reload=True)
    ws_ping_timeout: float = option(parse_float, 20.0, "Seconds a ping may wait for its pong before the WebSocket "
        "is closed (1011).", metavar="SECONDS", worker=True, reload=True)
    ws_max_queue: int = option(parse_int, 32, "Received WebSocket messages waiting for the app before reading "
        "stops.", metavar="N", worker=True, reload=True)

    # HTTP/2 (runtime/http/h2conn.py)
    http: str = option(Choice("auto", "1", "2"), "auto", "HTTP versions served: auto (HTTP/2 beside HTTP/1.1 when "
        "the h2 library is installed, pip install 'prun-cluster[http2]': ALPN h2 over TLS, prior knowledge in clear text), "
        "1 (HTTP/1.1 only), 2 (as auto, and prun does not start without the h2 library).", worker=True,
        reload=True)
    http2_max_streams: int = option(parse_int, 100, "HTTP/2: concurrent streams per connection (requests "
        "in progress, the app still running for a reset one included).", metavar="N", worker=True, reload=True)
    http2_engine: str = option(Choice("auto", "h2", "zttp"), "auto", "HTTP/2: the protocol library: h2 (pure "
        "Python), zttp (a Zig core, alpha, about 7x the requests per CPU second: pip install 'prun-cluster[zttp]', "
        "Python 3.11+), or auto: zttp when it is installed, else h2.", worker=True, reload=True)

    def worker_options(self, slot: int, generation: int, max_requests: int) -> WorkerOptions:
        """What a worker of this config is told at boot (`max_requests` is already jittered)."""
        values = {option.name: getattr(self, option.name) for option in WORKER}
        values.update(chdir=os.path.abspath(self.chdir), max_requests=max_requests, env=dict(self.env))
        for name in ("certfile", "keyfile", "ca_certs"):  # relative to where prun was started, not to --chdir
            values[name] = os.path.abspath(values[name]) if values[name] else ""
        return WorkerOptions(
            slot=slot,
            generation=generation,
            heartbeat_interval=min(1.0, self.timeout / 4) if self.timeout else 1.0,
            **values,
        )


OPTIONS: tuple[Option, ...] = tuple(
    dataclasses.replace(f.metadata["option"], name=f.name) for f in dataclasses.fields(Config))

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def values_in(args: list[str], names: tuple[str, ...]) -> dict[str, Any]:
    """The values of options `names` in `prun run` arguments (as run_arguments makes them: `--flag value`,
    a switch alone or as --no-switch, a repeated flag), each option's default where it is not given."""
    values = {name: BY_NAME[name].default_value() for name in names}
    given: dict[str, list[Any]] = {}
    flags = {BY_NAME[name].long: name for name in names}
    for index, arg in enumerate(args):
        if arg in flags and BY_NAME[flags[arg]].flag:
            values[flags[arg]] = True
        elif arg.startswith("--no-") and "--" + arg[5:] in flags:
            values[flags["--" + arg[5:]]] = False
        elif arg in flags and index + 1 < len(args):
            name = flags[arg]
            if BY_NAME[name].multiple:
                given.setdefault(name, []).append(args[index + 1])
            else:
                values[name] = parse(name, args[index + 1], arg)
    for name, items in given.items():
        values[name] = parse(name, items, BY_NAME[name].long)
    return values
WORKER: tuple[Option, ...] = tuple(option for option in OPTIONS if option.worker)


def parse(name: str, value: Any, source: str) -> Any:
    """`value` of option `name` from `source` (used in the error: '--timeout 'soon'', 'PRUN_TIMEOUT')."""
    try:
        return BY_NAME[name].parse(value)
    except UsageError:
        raise
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid {source}: {exc}") from None


FILE_KEYS: dict[str, Option] = {key.replace("-", "_"): option for option in OPTIONS if option.file
                                 for key in option.keys}


def from_file_key(key: str) -> Option | None:
    """The option a TOML key names ('keepalive-timeout', 'keepalive_timeout', an alias: 'workers'), if a file
    may set it."""
    return FILE_KEYS.get(key.replace("-", "_"))


def nearest(word: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """' (did you mean X?)' for the known word nearest a mistyped one, or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""


# ---- click --------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _metavar(option: Option) -> str:
    if option.metavar:
        return option.metavar
    if option.name.endswith("timeout"):
        return "SECONDS"
    if isinstance(option.parse, Choice):
        return "[" + "|".join(option.parse.choices) + "]"
    if option.parse in (parse_int, parse_float):
        return "N"
    return "TEXT"


def click_options(command: F) -> F:
    """Decorate a click command with every option of the table, in the table's order.

    Values arrive as text (None when not given) and are parsed by `config.build`, so that the command
    line, the environment and files share one parser and one kind of error message.
    """
    for option in reversed(OPTIONS):
        if option.argument:
            command = click.argument(option.name, required=False, metavar=option.metavar)(command)
            continue
        shown = option.default_text()
        text = option.help + (f"  [default: {shown}]" if shown else "")
        if option.flag and option.default is True:  # on by default: --no-NAME turns it off
            switch = f"{option.long}/--no-{option.long[2:]}"
            command = click.option(switch, option.name, default=None, help=text)(command)
        elif option.flag:
            command = click.option(*option.flags, option.name, is_flag=True, default=None, help=text)(command)
        elif option.bare:
            command = click.option(*option.flags, option.name, is_flag=False, flag_value=option.bare, help=text,
                                   metavar=f"[={_metavar(option)}]")(command)
        else:
            command = click.option(*option.flags, option.name, multiple=option.multiple, help=text,
                                   metavar=_metavar(option))(command)
    return command


# ---- the README's options table ----------------------------------------------------------------

README_BEGIN = "<!-- options: generated from cluster/options.py by `python -m prun.cluster.options` -->"
README_END = "<!-- end of options -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_table() -> str:
    """The README's options table, generated from OPTIONS."""
    rows = ["| option | default | on reload (HUP) | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        if option.argument:
            continue
        flags = "/".join(option.flags) + ("" if option.flag else f" {_metavar(option)}")
        if option.flag and option.default is True:
            flags += f"/--no-{option.long[2:]}"
        default = option.default_text()
        rows.append(f"| `{_cell(flags)}` | {f'`{_cell(default)}`' if default else ''} | "
                    f"{'applied' if option.reload else 'needs a restart'} | {_cell(option.help)} |")
    return "\n".join(rows)


def readme_section(text: str) -> tuple[int, int]:
    """Where the generated table sits in README text: (start, end) offsets between the markers."""
    start = text.index(README_BEGIN) + len(README_BEGIN)
    return start, text.index(README_END, start)


def update_readme(path: str) -> bool:
    """Rewrite the README's options table from OPTIONS; whether it changed."""
    with open(path) as fh:
        text = fh.read()
    start, end = readme_section(text)
    new = text[:start] + "\n" + readme_table() + "\n" + text[end:]
    if new != text:
        with open(path, "w") as fh:
            fh.write(new)
    return new != text


if __name__ == "__main__":
    print("updated" if update_readme(sys.argv[1] if len(sys.argv) > 1 else "docs/options.md") else "up to date")
