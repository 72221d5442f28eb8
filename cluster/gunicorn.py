"""`prun -c gunicorn.conf.py`: a gunicorn config file's settings as prun's options, and its server hooks.

The file is Python and is executed in the master, as gunicorn executes it (and again in each worker if it
defines a worker hook: runtime/hooks.py); prun's own config files are TOML, never executed. Each name the
file defines that is one of gunicorn's settings is either taken as the prun option it maps onto
(MAPPED), or ignored with one line saying why (IGNORED), or, where ignoring it would run the app
differently than asked (another user, the PROXY protocol), refused. Other names (imports, helpers) are
left alone, as gunicorn leaves them. docs/from-gunicorn.md is the table for people.
"""

from __future__ import annotations

import os
import ssl
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from prun.cluster.errors import PrunError, UsageError
from prun.cluster.options import DEFAULT_PORT, nearest
from prun.runtime import hooks as hooklib

# gunicorn setting -> prun option, with the value as prun takes it
MAPPED: dict[str, tuple[str, Callable[[Any], Any]]] = {}


def _same(value: Any) -> Any:
    return value


def _joined(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple, set)) else value


def _binds(value: Any) -> list[str]:
    """gunicorn's HOST alone means HOST:8000."""
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in map(str, items):
        bare = not item.startswith(("unix:", "fd://")) and not item.rsplit("]", 1)[-1].count(":")
        out.append(f"{item}:{DEFAULT_PORT}" if bare else item)
    return out


def _cert_reqs(value: Any) -> str:
    words = {int(ssl.CERT_NONE): "none", int(ssl.CERT_OPTIONAL): "optional", int(ssl.CERT_REQUIRED): "required"}
    return words.get(int(value), str(value)) if isinstance(value, int) else str(value)


def _reload(value: Any) -> Any:
    return "." if value else ""


for _name in ("backlog", "max_requests", "max_requests_jitter", "timeout", "graceful_timeout", "limit_request_line",
              "chdir", "certfile", "keyfile", "ca_certs", "ciphers", "access_log_format", "threads", "root_path"):
    MAPPED[_name] = (_name, _same)
MAPPED.update({
    "bind": ("bind", _binds),
    "workers": ("instances", _same),
    "keepalive": ("keepalive_timeout", _same),
    "forwarded_allow_ips": ("forwarded_allow_ips", _joined),
    "pidfile": ("pid_file", _same),
    "raw_env": ("env", _same),
    "loglevel": ("log_level", _same),
    "proc_name": ("name", _same),
    "cert_reqs": ("cert_reqs", _cert_reqs),
    "wsgi_app": ("app", _same),
    "reload": ("watch", _reload),
    "asgi_lifespan": ("lifespan", _same),
    "errorlog": ("log_file", _same),  # '-' (stderr, the default) is dropped below
    "accesslog": ("access_log_file", _same),  # '-' is stdout; either turns the access log on, below
})

FRESH = "each prun worker is a fresh interpreter started by the master, not a fork of it"
IGNORED: dict[str, str] = {
    "worker_class": "prun serves ASGI and WSGI apps itself (--interface tells which from the app)",
    "worker_connections": "prun has no per-worker connection cap; --limit-concurrency bounds requests in progress",
    "limit_request_fields": "prun bounds the header section's size instead (--limit-request-header-size)",
    "limit_request_field_size": "prun bounds the whole header section instead (--limit-request-header-size)",
    "reload_engine": "--watch uses watchfiles (the prun-cluster[watch] extra)",
    "reload_extra_files": "--watch takes directories (--watch=src,templates)",
    "spew": "prun has no line tracer",
    "check_config": "prun checks its config as it starts, and stops with one line if it is wrong",
    "print_config": "prun run --help shows the defaults; a reload logs what changed",
    "preload_app": f"{FRESH}: there is nothing to preload into, every worker imports the app itself",
    "sendfile": "prun's server does not use sendfile()",
    "reuse_port": "the master binds each address once and every worker shares that socket",
    "daemon": "prun start runs the app under prun's daemon (prun ls, logs, reload)",
    "worker_tmp_dir": "workers heartbeat over their control channel, not through a file",
    "umask": "prun does not change its umask; --unix-mode sets a unix socket's permissions",
    "initgroups": "prun does not switch users (start it as that user)",
    "tmp_upload_dir": "prun streams request bodies to the app and stores none",
    "secure_scheme_headers": "prun takes the scheme from X-Forwarded-Proto of --forwarded-allow-ips peers",
    "forwarder_headers": "prun takes SCRIPT_NAME from --root-path, not from a header",
    "header_map": "prun's HTTP parser refuses ambiguous header names itself",
    "disable_redirect_access_to_syslog": "prun does not log to syslog",
    "capture_output": "prun always sends the workers' output where its own goes (--log-file)",
    "logger_class": "prun's log lines are its own (--log-format text or json)",
    "logconfig": "prun's log lines are its own (--log-format text or json)",
    "logconfig_dict": "prun's log lines are its own (--log-format text or json)",
    "logconfig_json": "prun's log lines are its own (--log-format text or json)",
    "syslog_addr": "prun does not log to syslog",
    "syslog": "prun does not log to syslog",
    "syslog_prefix": "prun does not log to syslog",
    "syslog_facility": "prun does not log to syslog",
    "enable_stdio_inheritance": "workers always write to prun's output (prun start: the app's log files)",
    "statsd_host": "prun serves Prometheus metrics instead (--health PORT, /metrics)",
    "dogstatsd_tags": "prun serves Prometheus metrics instead (--health PORT, /metrics)",
    "statsd_prefix": "prun serves Prometheus metrics instead (--health PORT, /metrics)",
    "enable_backlog_metric": "prun serves Prometheus metrics instead (--health PORT, /metrics)",
    "default_proc_name": "the process titles are prun's (--name)",
    "pythonpath": "prun puts --chdir first on sys.path; set PYTHONPATH for more",
    "paste": "prun serves MODULE:ATTR, not PasteDeploy files",
    "raw_paste_global_conf": "prun serves MODULE:ATTR, not PasteDeploy files",
    "proxy_allow_ips": "prun does not read the PROXY protocol",
    "uwsgi_allow_ips": "prun speaks HTTP only, not uWSGI's protocol",
    "ssl_version": "gunicorn ignores it too; --tls-profile sets the TLS versions",
    "suppress_ragged_eofs": "prun's TLS handling is its own",
    "do_handshake_on_connect": "prun's TLS handling is its own (--limit-tls-handshakes)",
    "http_protocols": "prun chooses the HTTP version itself",
    "http2_cleartext": "prun chooses the HTTP version itself",
    "http2_max_concurrent_streams": "prun's HTTP/2 limits are its own",
    "http2_initial_window_size": "prun's HTTP/2 limits are its own",
    "http2_max_frame_size": "prun's HTTP/2 limits are its own",
    "http2_max_header_list_size": "prun's HTTP/2 limits are its own",
    "permit_obsolete_folding": "prun's HTTP parser (httptools) decides",
    "strip_header_spaces": "prun's HTTP parser (httptools) decides",
    "permit_unconventional_http_method": "prun's HTTP parser (httptools) decides",
    "permit_unconventional_http_version": "prun's HTTP parser (httptools) decides",
    "casefold_http_method": "prun's HTTP parser (httptools) decides",
    "asgi_loop": "prun's workers always run on uvloop",
    "asgi_disconnect_grace_period": "prun tells the app of a disconnect (http.disconnect) and lets it finish",
    "http_parser": "prun's HTTP parser is httptools",
    "dirty_apps": "prun has no dirty worker pool",
    "dirty_workers": "prun has no dirty worker pool",
    "dirty_timeout": "prun has no dirty worker pool",
    "dirty_threads": "prun has no dirty worker pool",
    "dirty_graceful_timeout": "prun has no dirty worker pool",
    "control_socket": "prun's master is controlled by signals, or by prun's daemon (prun start)",
    "control_socket_mode": "prun's master is controlled by signals, or by prun's daemon (prun start)",
    "control_socket_disable": "prun's master is controlled by signals, or by prun's daemon (prun start)",
    "config": "a config file does not name another",
    # hooks prun does not run
    "on_reload": "not run: a reload is prun's own rollout (HUP), which logs each step",
    "pre_fork": f"not run: {FRESH}; put per-worker set-up in post_worker_init",
    "post_fork": f"not run: {FRESH}; put per-worker set-up in post_worker_init",
    "pre_exec": "not run: prun never re-executes its master (HUP reloads the workers)",
    "worker_int": "not run: a worker ignores SIGINT; the master drains it",
    "worker_abort": "not run: a hung worker's stack is printed by faulthandler when the master aborts it",
    "pre_request": "not run: per request, use an ASGI or WSGI middleware",
    "post_request": "not run: per request, use an ASGI or WSGI middleware",
    "child_exit": "not run: the master logs each worker's exit (and prun start's events tell them)",
    "nworkers_changed": "not run: the master logs each scaling (TTIN, TTOU, prun scale)",
    "ssl_context": "not run: prun builds its TLS context from --certfile, --ciphers, --tls-profile, ...",
    "on_dirty_starting": "not run: prun has no dirty worker pool",
    "dirty_post_fork": "not run: prun has no dirty worker pool",
    "dirty_worker_init": "not run: prun has no dirty worker pool",
    "dirty_worker_exit": "not run: prun has no dirty worker pool",
}
HOOKS = hooklib.MASTER_HOOKS + hooklib.WORKER_HOOKS
REFUSED = ("user", "group", "proxy_protocol", "protocol")  # checked in _refuse: ignoring them could do harm
KNOWN = set(MAPPED) | set(IGNORED) | set(HOOKS) | set(REFUSED)


@dataclass
class Hooks:
    """The server hooks a gunicorn config file defines that prun runs."""

    path: str
    cfg: SimpleNamespace
    master: dict[str, Callable[..., Any]] = field(default_factory=dict)  # on_starting, when_ready, on_exit
    worker: bool = False  # it defines post_worker_init or worker_exit: workers execute the file too


@dataclass
class Loaded:
    settings: dict[str, Any]  # prun option -> value, for the option's parser
    notes: list[str]  # one line per setting or hook ignored, and why
    hooks: Hooks


def load(path: str) -> Loaded:
    """Execute a gunicorn config file; what prun takes from it. UsageError when it cannot run or be used."""
    if not os.path.isfile(path):
        raise UsageError(f"cannot read config file {path}: no such file")
    try:
        names = hooklib.execute(path)
    except SystemExit as exc:
        raise UsageError(f"config file {path} called sys.exit({exc.code})") from None
    except BaseException as exc:
        where = traceback.extract_tb(exc.__traceback__)
        line = next((f" (line {f.lineno})" for f in reversed(where) if f.filename == path), "")
        raise UsageError(f"cannot run config file {path}{line}: {type(exc).__name__}: {exc}") from None
    settings: dict[str, Any] = {}
    notes: list[str] = []
    name_of = os.path.basename(path)
    cfg = hooklib.settings_of(names, lambda k: k in KNOWN and k not in HOOKS)
    hooks = Hooks(path, cfg)
    for key, value in names.items():
        if key.startswith("_") or key not in KNOWN:
            if not key.startswith("_") and key.islower() and not callable(value) and not isinstance(value, type(os)):
                hint = nearest(key, KNOWN)
                if hint:
                    notes.append(f"{name_of}: {key} is not a gunicorn setting{hint}; ignored")
            continue
        _refuse(key, value, path)
        if key in hooklib.MASTER_HOOKS:
            hooks.master[key] = value
        elif key in hooklib.WORKER_HOOKS:
            hooks.worker = True
        elif key in MAPPED:
            _map(key, value, settings)
        elif key in IGNORED:
            reason = IGNORED[key]
            notes.append(f"{name_of}: {key} {reason if reason.startswith('not run') else 'ignored: ' + reason}")
        elif key in ("user", "group") and value is not None:
            notes.append(f"{name_of}: {key} ignored: prun already runs as that {key}")
    return Loaded(settings, notes, hooks)


def _map(key: str, value: Any, settings: dict[str, Any]) -> None:
    option, convert = MAPPED[key]
    if value is None or (key == "errorlog" and value == "-"):
        return  # gunicorn's "none given"; errorlog '-' is stderr, where prun writes anyway
    if key == "accesslog":
        settings["access_log"] = settings.get("access_log") or "common"
        if value == "-":
            return  # stdout: the access log's default place
    settings[option] = convert(value)


def _refuse(key: str, value: Any, path: str) -> None:
    """Settings that prun cannot honour and must not silently drop."""
    if key in ("user", "group") and value is not None:
        import grp
        import pwd

        try:
            if key == "user":
                wanted = value if isinstance(value, int) else pwd.getpwnam(str(value)).pw_uid
                ours = os.geteuid()
            else:
                wanted = value if isinstance(value, int) else grp.getgrnam(str(value)).gr_gid
                ours = os.getegid()
        except KeyError:
            raise UsageError(f"{key} = {value!r} in {path}: no such {key} on this machine") from None
        if wanted != ours:
            raise UsageError(f"{key} = {value!r} in {path}: prun does not switch users; start prun as that {key} "
                             f"(systemd User=/Group=), or remove the setting")
    if key == "proxy_protocol" and value not in (None, False, "off", ""):
        raise UsageError(f"proxy_protocol = {value!r} in {path}: prun does not read the PROXY protocol; turn it off "
                         f"in the proxy, and trust its X-Forwarded-For with --forwarded-allow-ips")
    if key == "protocol" and value not in (None, "http"):
        raise UsageError(f"protocol = {value!r} in {path}: prun speaks HTTP only")


class MasterHooks:
    """Runs a gunicorn config file's on_starting, when_ready and on_exit in the master."""

    def __init__(self, hooks: Hooks | None, write: Callable[[str, str], None], app: str, workers: int) -> None:
        self.hooks = hooks
        self.write = write
        self.server = SimpleNamespace(pid=os.getpid(), cfg=hooks.cfg if hooks else SimpleNamespace(),
                                      log=hooklib.HookLog(write), app=app, num_workers=workers)
        self.started = False

    def run(self, name: str, fatal: bool = False) -> None:
        """Call hook `name`(server) if the file defines it. What it raises: logged with its traceback; or, when
        `fatal` (on_starting: nothing runs yet), a PrunError that ends prun."""
        hook = self.hooks.master.get(name) if self.hooks else None
        if hook is None:
            return
        try:
            hook(self.server)
        except Exception as exc:
            where = f" in {self.hooks.path}" if self.hooks else ""
            told = (f"the {name} hook{where} failed: {type(exc).__name__}: {exc}\n"
                    + "".join(traceback.format_tb(exc.__traceback__)[1:]).rstrip())
            if fatal:
                raise PrunError(told) from None
            self.write("error", told)
