"""The Python client of prun's daemon, which the `prun` command itself uses.

    from prun.cluster.client import Client

    client = Client()                                   # $PRUN_HOME, or ~/.prun; starts the daemon if needed
    client.start("app:server", name="api", instances=2, bind=["127.0.0.1:8000"], env={"MODE": "prod"})
    for row in client.list():
        print(row["name"], row["status"], row["workers"])
    client.reload("api")                                # lossless rolling reload; returns when it is done
    for event in client.subscribe():                    # {"event": "online", "app": "api", ...}
        print(event)

Every method that acts returns the app table afterwards (the rows `prun ls --json` prints). A refusal
raises ClientError with the daemon's code (rpc.py: NO_SUCH_APP, ALREADY_RUNNING, ...) and its sentence; a
daemon that does not answer in time, ClientError("TIMEOUT") (Client's docstring says how long it waits).
This module is on the path of every command: it imports only the standard library at module level.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from prun.cluster import names
from prun.cluster.daemon.home import Home
from prun.cluster.errors import PrunError, UsageError
from prun.cluster.rpcconn import IDLE_TIMEOUT, Connection, connect
from prun.cluster.rpcconn import ClientError as ClientError  # where callers have always imported it from

DAEMON_START_TIMEOUT = 15.0
APP_PATTERN = names.TARGET  # MODULE:ATTR: cluster mode


Rows = list[dict[str, Any]]  # the app table: `prun ls --json`
Target = str | int | list[str]  # a name, an id, all, a namespace, a /regex/, a script; or several of them


def _target(target: Target) -> str | list[str]:
    return [str(t) for t in target] if isinstance(target, (list, tuple)) else str(target)


QUICK_TIMEOUT = 30.0  # seconds: the cap of a command that only reads or writes the daemon's table
LONG_TIMEOUT = 900.0  # seconds: the cap of one that waits on apps, beyond the daemon's own limits (reload: 600 s)
LONG_COMMANDS = frozenset({"start", "stop", "reload", "restart", "delete", "scale", "kill", "resurrect"})
BUSY_RETRY = 0.1  # seconds before asking again a daemon that had no descriptor free


class Client:
    """The daemon of one $PRUN_HOME, driven command by command (a connection each).

    No call waits for ever: the daemon may stay silent `idle_timeout` seconds at most (at work, it sends a
    progress line every second), and a command may take `timeout` seconds in all (None: its own cap,
    QUICK_TIMEOUT, or LONG_TIMEOUT for LONG_COMMANDS); past either, ClientError("TIMEOUT")."""

    def __init__(self, home: str | None = None, autostart: bool = True, timeout: float | None = None,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.home = Home(os.path.abspath(home)) if home else Home.from_environ()
        self.autostart = autostart
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self._next_id = 0

    # ---- the connection ------------------------------------------------------------------------

    def _connect(self) -> Connection:
        """A checked connection to the daemon (rpcconn.connect); OSError when none listens."""
        return connect(self.home, self.idle_timeout)

    def _open(self) -> Connection:
        """A checked connection to the daemon, started first if none listens (and autostart is on)."""
        try:
            return self._connect()
        except OSError:
            if not self.autostart:
                raise ClientError("NOT_RUNNING", f"no prun daemon runs on {self.home.path}") from None
        self.start_daemon()
        return self._connect()

    def _ask(self, command: str, args: dict[str, Any], open_connection: Callable[[], Connection]
             ) -> tuple[Connection, Any]:
        """Send one request on a new connection: the connection (still open) and the result. A daemon out of
        descriptors turns a newcomer away (BUSY) before reading it: asked again until the idle timeout."""
        deadline = time.monotonic() + self.idle_timeout
        cap = self.timeout if self.timeout is not None else (
            LONG_TIMEOUT if command in LONG_COMMANDS else QUICK_TIMEOUT)
        while True:
            conn = open_connection()
            self._next_id += 1
            try:
                return conn, conn.request(self._next_id, command, args, cap)
            except ClientError as exc:
                conn.close()
                if exc.code_name != "BUSY" or time.monotonic() >= deadline:
                    raise
            except BaseException:
                conn.close()
                raise
            time.sleep(BUSY_RETRY)

    def call(self, command: str, **args: Any) -> Any:
        """Send one request (starting the daemon first if none listens); its result."""
        conn, result = self._ask(command, args, self._open)
        conn.close()
        return result

    def running(self) -> bool:
        """Whether a daemon answers a ping on this home (never starts one); ClientError("TIMEOUT") when one
        listens but does not answer."""
        try:
            conn, result = self._ask("ping", {}, self._connect)
        except OSError:
            return False
        except ClientError as exc:
            if exc.code_name == "TIMEOUT":
                raise
            return False
        conn.close()
        return bool(result)

    def start_daemon(self) -> None:
        """Start a daemon detached (its own session, not our child) and wait until it answers."""
        self.home.ensure()
        env = dict(os.environ, PRUN_HOME=self.home.path)
        log = os.open(self.home.daemon_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        start_at = os.fstat(log).st_size
        argv = [sys.executable, "-m", "prun.cluster.daemon"]
        pid = os.fork()
        if pid == 0:  # the child: a new session, then a grandchild that becomes the daemon
            try:
                os.setsid()
                if os.fork() == 0:
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    os.chdir("/")
                    os.execve(argv[0], argv, env)
            finally:
                os._exit(0)
        os.close(log)
        os.waitpid(pid, 0)
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.running():
                return
            if "prun: error: " in _last_line(self.home.daemon_log, start_at, raw=True):
                break  # it refused to start (another daemon holds the lock, a bad home)
            time.sleep(0.02)
        raise ClientError("NOT_RUNNING", f"the prun daemon did not start: {_last_line(self.home.daemon_log, start_at)}")

    # ---- commands ------------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("ping")
        return result

    def list(self) -> Rows:
        result: Rows = self.call("list")
        return result

    def describe(self, target: Target) -> Rows:
        result: Rows = self.call("describe", target=_target(target))
        return result

    def env(self, target: Target) -> dict[str, str]:
        result: dict[str, str] = self.call("env", target=_target(target))
        return result

    def start(self, target: str, name: str | None = None, namespace: str = "default",
              instances: str | int | None = None, env: dict[str, str] | None = None,
              autorestart: bool | None = None, cwd: str | None = None, environ: dict[str, str] | None = None,
              **run_options: Any) -> Rows:
        """Start TARGET (MODULE:ATTR in cluster mode; a script or a command in fork mode) under the daemon.

        `run_options` are `prun run`'s options by name (bind=["127.0.0.1:0"], balance="shared", ...);
        `max_memory_restart="300M"` replaces (losslessly) a worker that grows past it; `autorestart=False`
        replaces nothing that exits unasked (--no-autorestart).
        """
        spec = build_spec(target, name=name, namespace=namespace, instances=instances, env=env or {},
                          autorestart=autorestart, cwd=cwd or os.getcwd(), run_options=run_options,
                          environ=dict(os.environ if environ is None else environ))
        result: Rows = self.call("start", spec=spec,
                                                 env=dict(os.environ if environ is None else environ))
        return result

    def stop(self, target: Target) -> Rows:
        result: Rows = self.call("stop", target=_target(target))
        return result

    def reload(self, target: Target) -> Rows:
        result: Rows = self.call("reload", target=_target(target))
        return result

    def restart(self, target: Target, env: dict[str, str] | None = None, update_env: bool = False,
                environ: dict[str, str] | None = None) -> Rows:
        """Stop then start with the stored arguments; `env` changes declared variables, `update_env` takes
        this process's environment (or `environ`) as the new base."""
        caller = dict(os.environ if environ is None else environ) if update_env else None
        result: Rows = self.call("restart", target=_target(target), env=env or {}, environ=caller)
        return result

    def delete(self, target: Target) -> Rows:
        result: Rows = self.call("delete", target=_target(target))
        return result

    def scale(self, target: Target, count: str | int) -> Rows:
        result: Rows = self.call("scale", target=_target(target), count=str(count))
        return result

    def reset(self, target: Target) -> Rows:
        """Set the apps' restart counts back to 0."""
        result: Rows = self.call("reset", target=_target(target))
        return result

    def signal(self, signal: str | int, target: Target) -> Rows:
        """Send a signal to the apps' processes: a cluster app's master, a fork app's instances."""
        result: Rows = self.call("signal", signal=str(signal), target=_target(target))
        return result

    def save(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("save")
        return result

    def resurrect(self, environ: dict[str, str] | None = None) -> Rows:
        result: Rows = self.call("resurrect", env=dict(os.environ if environ is None else environ))
        return result

    def kill(self) -> None:
        """Stop every app gracefully, then the daemon; returns once the daemon is gone."""
        if not self.running():
            return
        pid = self.home.daemon_pid()
        self.call("kill")
        _wait_gone(pid)

    def update(self) -> dict[str, Any]:
        """Replace the daemon by a new one (new code); the apps keep running and are adopted."""
        pid = self.home.daemon_pid() if self.running() else None
        if pid:
            self.call("update")
            _wait_gone(pid)
        return self.ping()

    def subscribe(self) -> Iterator[dict[str, Any]]:
        """Every event from now on (subscribed before this returns), as the daemon publishes them."""
        conn, result = self._ask("subscribe", {}, self._open)
        if result != "subscribed":
            conn.close()
            raise ClientError("INTERNAL", f"the daemon did not subscribe us: {result!r}")
        return conn.events()


def _wait_gone(pid: int | None, timeout: float = 120.0) -> None:
    from prun.cluster.daemon.home import start_time

    deadline = time.monotonic() + timeout
    while pid and start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.02)


def _last_line(path: str, offset: int, raw: bool = False) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            lines = [line for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    if raw:
        return lines[-1] if lines else ""
    return lines[-1].removeprefix("prun: error: ") if lines else "it exited without a word"


def default_name(target: str, mode: str, command: list[str]) -> str:
    """The name of an app started without --name: its module's, or its script's or command's file name."""
    if mode == "cluster":
        return names.derived(target.split(":", 1)[0].rsplit(".", 1)[-1])
    word = os.path.basename(command[1] if os.path.basename(command[0]).startswith("python") and len(command) > 1
                            else command[0])
    return names.derived(word[:-3] if word.endswith(".py") else word)


def check_names(name: str | None, namespace: str) -> None:
    """UsageError unless the --name given (if any) and the namespace follow the rule of names (names.py)."""
    for flag, value in (("--name", name), ("--namespace", namespace)):
        if value is None or (flag == "--name" and not value):
            continue
        try:
            names.check(value)
        except ValueError as exc:
            raise UsageError(f"invalid {flag} {names.shown(value)}: {exc}") from None


def build_spec(target: str, name: str | None, namespace: str, instances: str | int | None, env: dict[str, str],
               autorestart: bool | None, cwd: str, run_options: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """The start spec the daemon stores: checked here, where the user's directory and environment are."""
    import shlex

    from prun.cluster.daemon.spec import daemon_options

    check_names(name, namespace)
    cwd = os.path.abspath(cwd)
    options = {k: v for k, v in run_options.items() if v is not None and v != ()}
    # the daemon's log writer's options, not the master's: they become fields of the spec
    logs = {k: options.pop(k) for k in daemon_options() if k in options}
    combined = options.pop("combined_file", "")  # PM2's -l: no option of `prun run`
    if APP_PATTERN.fullmatch(target):
        from prun.cluster import config as config_mod

        values = dict(options, **logs, app=target, instances=str(instances) if instances is not None else None,
                      autorestart=autorestart)
        here = os.getcwd()
        try:
            os.chdir(cwd)
            config = config_mod.build(values, environ)
            config_mod.check_tls(config)
        finally:
            os.chdir(here)
        bind = [f"unix:{os.path.join(cwd, b[5:])}" if b.startswith("unix:") else b for b in config.bind]
        return {**log_spec(lambda name: getattr(config, name), cwd), "combined_file": _path(cwd, combined),
                "name": name or default_name(target, "cluster", []), "target": target, "mode": "cluster",
                "cwd": cwd, "namespace": namespace, "instances": str(instances or config.instances),
                "run_args": run_arguments(options), "bind": bind, "backlog": config.backlog,
                "graceful_timeout": config.graceful_timeout, "env": dict(env), "autorestart": config.autorestart}
    try:
        words = shlex.split(target)
    except ValueError as exc:
        raise PrunError(f"invalid command {target!r}: {exc}") from None
    if not words:
        raise PrunError("no app given: prun start MODULE:ATTR, a script or a command")
    interpreter = options.pop("interpreter", "")
    if needs_shell(target):  # `echo ok; sleep 30`: what a shell means by it, as PM2 runs it
        words = ["/bin/sh", "-c", target]
    elif words[0].endswith(".py") or (len(words) == 1 and os.path.isfile(os.path.join(cwd, words[0]))):
        path = os.path.join(cwd, words[0])
        if not os.path.isfile(path):
            raise PrunError(f"cannot start {words[0]}: no such file in {cwd}")
        if interpreter:
            words = [*shlex.split(interpreter), path, *words[1:]]
        else:
            words = [sys.executable, path, *words[1:]] if words[0].endswith(".py") else [path, *words[1:]]
    count = str(instances if instances is not None else 1)
    if count in ("max", "0") or count.lstrip("-").isdigit():
        from prun.cluster.config import parse_instances

        count = str(parse_instances(count))
    else:
        raise PrunError(f"invalid instances {count!r}: expected a number, 'max', 0 or -N")
    from prun.cluster.options import BY_NAME, parse

    def given(name: str) -> Any:
        values = logs if name in logs else options
        return parse(name, values[name], BY_NAME[name].long) if name in values else BY_NAME[name].default_value()

    unused = [BY_NAME[option_name].long for option_name in options if option_name not in FORK_TAKES]
    if unused:  # said, never silently dropped
        raise UsageError(f"{', '.join(unused)}: not an option of a fork-mode app (a command or a script, served by "
                         "nobody): only a MODULE:ATTR app takes " + ("it" if len(unused) == 1 else "them"))
    for option_name in FORK_OPTIONS:  # checked here: a bad value is a usage error, before anything starts
        if option_name in options:
            parse(option_name, options[option_name], BY_NAME[option_name].long)
    spec = {**log_spec(given, cwd), "combined_file": _path(cwd, combined),
            "name": name or default_name(target, "fork", shlex.split(target) if words[0] == "/bin/sh" else words),
            "target": target, "mode": "fork", "cwd": cwd, "namespace": namespace, "instances": count,
            "command": words, "env": dict(env), "autorestart": autorestart is not False,
            "run_args": run_arguments({k: v for k, v in options.items() if k in FORK_OPTIONS + FORK_LOG_OPTIONS})}
    if options.get("kill_timeout"):  # PM2's name for it, in milliseconds
        spec["graceful_timeout"] = parse("kill_timeout", options["kill_timeout"], "--kill-timeout")
    elif "graceful_timeout" in options:  # else the schema's default for fork mode (PM2's kill_timeout)
        value = options["graceful_timeout"]
        spec["graceful_timeout"] = parse("graceful_timeout", value, f"--graceful-timeout {value!r}")
    return spec


# The options of `prun run` a fork-mode supervisor follows (the rest are about serving).
FORK_OPTIONS = ("max_restarts", "min_uptime", "restart_delay", "exp_backoff_restart_delay", "stop_exit_codes",
                "instance_var", "kill_signal", "max_memory_restart", "watch", "ignore_watch", "cron_restart",
                "pid_file")


def needs_shell(command: str) -> bool:
    """Whether a command line means something only a shell does: `;`, `&`, `|`, `<`, `>`, `(`, `)` outside
    quotes, or `$` and a backquote outside single quotes (`python -c "a; b"` does not)."""
    quote = ""
    escaped = False
    for char in command:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = ""
            elif quote == '"' and char in "$`":
                return True
        elif char in "'\"":
            quote = char
        elif char in ";&|<>()$`":
            return True
    return False

FORK_LOG_OPTIONS = ("log_format", "log_json_time", "log_max_line")  # what a fork-mode supervisor's relay takes
# Every option of `prun run` a fork-mode app takes (beside those of its log files): the rest is refused.
FORK_TAKES = (*FORK_OPTIONS, *FORK_LOG_OPTIONS, "kill_timeout", "graceful_timeout", "merge_logs")
LOG_OPTIONS = ("log_file", "error_file", "log_max_size", "log_retain", "log_compress", "log_rotate_daily", "time",
               "log_date_format")


def _path(cwd: str, path: str) -> str:
    return os.path.join(cwd, path) if path else ""


def log_spec(value: Any, cwd: str) -> dict[str, Any]:
    """The spec's log settings (for the daemon's log writer); `value(name)` gives each option's value."""
    def path(name: str) -> str:
        return os.path.join(cwd, value(name)) if value(name) else ""

    return {"log_file": path("log_file"), "error_file": path("error_file"), "log_max_size": value("log_max_size"),
            "log_retain": value("log_retain"), "log_compress": value("log_compress"),
            "log_rotate_daily": value("log_rotate_daily"), "merge_logs": value("merge_logs"),
            "log_time": value("log_date_format") if value("time") else ""}


def run_arguments(options: dict[str, Any]) -> list[str]:
    """`prun run`'s arguments for these option values, from the option table `prun run` is built from."""
    from prun.cluster.daemon.schema import CARRIED
    from prun.cluster.options import BY_NAME, OPTIONS

    unknown = sorted(set(options) - set(BY_NAME))
    if unknown:
        raise PrunError(f"unknown option {unknown[0]!r} (prun run --help lists them)")
    argv: list[str] = []
    for option in OPTIONS:
        name = option.name
        if option.argument or name in CARRIED or name not in options:
            continue
        value = options[name]
        if option.flag:
            if value:
                argv.append(option.long)
            elif value is not None and option.default is True:
                argv.append(f"--no-{option.long[2:]}")  # turned off: --no-proxy-headers
        elif option.multiple:
            for item in value:
                argv += [option.long, str(item)]
        else:
            argv += [option.long, str(value)]
    return argv
