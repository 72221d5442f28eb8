"""The option table (cluster/options.py) agrees with Config, WorkerOptions, `prun run --help` and the README."""

from __future__ import annotations

import dataclasses
import grp
import os
import subprocess
import typing
from pathlib import Path

import pytest

from prun.cluster import config as config_mod
from prun.cluster.config import Config
from prun.cluster.errors import UsageError
from prun.cluster.options import BY_NAME, OPTIONS, WORKER, cpu_count, readme_section, readme_table
from prun.runtime.options import WorkerOptions
from tests.support import prun_command

README = Path(__file__).resolve().parent.parent / "docs" / "options.md"
# WorkerOptions fields the master sets itself; they are not options a user gives.
MASTER_SET = {"slot", "generation", "heartbeat_interval", "drain_idle_window", "server_header", "access_log_fd",
              "hooks_file"}


def test_config_has_one_field_per_option_of_the_defaults_type():
    hints = typing.get_type_hints(Config)
    assert list(hints) == [option.name for option in OPTIONS]
    for name, hint in hints.items():
        assert isinstance(BY_NAME[name].default, typing.get_origin(hint) or hint), name


def test_worker_options_have_the_tables_names_and_defaults():
    fields = {f.name: f for f in dataclasses.fields(WorkerOptions)}
    assert set(fields) - MASTER_SET == {option.name for option in WORKER}
    defaults = WorkerOptions()
    for option in WORKER:
        assert getattr(defaults, option.name) == option.default, option.name


def test_a_config_built_from_nothing_has_the_tables_defaults(tmp_path):
    config = config_mod.build({"app": "m:a", "chdir": str(tmp_path)}, {})
    for option in OPTIONS:
        if option.name not in ("app", "chdir"):
            assert getattr(config, option.name) == option.default, option.name
    options = config.worker_options(0, 1, 0)
    assert options.balance == "leastconn" and options.graceful_timeout == 25.0


def test_the_readme_options_table_is_the_generated_one():
    text = README.read_text()
    start, end = readme_section(text)
    assert text[start:end].strip() == readme_table(), "run: python -m prun.cluster.options"


def test_help_lists_every_option_with_its_default():
    result = subprocess.run(prun_command() + ["run", "--help"], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, COLUMNS="200"))
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())  # click wraps lines
    for option in OPTIONS:
        if option.argument:
            continue
        assert option.long in flat
        if option.default_text():
            assert f"[default: {' '.join(option.default_text().split())}]" in flat, option.name


def test_every_option_is_a_toml_key_and_an_environment_variable(tmp_path):
    samples = {"app": "m:a", "instances": 3, "bind": ["127.0.0.1:1"], "chdir": str(tmp_path), "factory": True,
               "interface": "wsgi", "name": "n", "env": {"K": "v"}, "backlog": 7, "balance": "shared",
               "graceful_timeout": 1.5, "ready_timeout": 2.0, "timeout": 3.0, "reload_batch": 2,
               "max_requests": 9, "max_requests_jitter": 4, "pid_file": "p", "log_format": "json",
               "log_file": "l", "container": True, "health": "9", "lifespan": "off", "root_path": "/r",
               "proxy_headers": False, "forwarded_allow_ips": "*", "threads": 2, "keepalive_timeout": 6.0,
               "timeout_request_header": 4.0, "timeout_write": 7.0,
               "limit_request_line": 10, "limit_request_header_size": 11, "limit_request_body": 0,
               "limit_concurrency": 5, "access_log": "json", "error_file": "e", "log_max_size": 1024,
               "log_retain": 2, "log_compress": True, "log_rotate_daily": True, "time": True,
               "log_date_format": "%H", "max_memory_restart": 2048, "watch": "src", "ignore_watch": "*.log",
               "cron_restart": "0 3 * * *", "merge_logs": False,
               "certfile": "c.pem", "keyfile": "k.pem", "keyfile_password": "pw", "ca_certs": "ca.pem",
               "cert_reqs": "required", "ciphers": "ECDHE+AESGCM", "tls_groups": "X25519",
               "tls_profile": "intermediate", "limit_tls_handshakes": 16,
               "ws": "none", "ws_max_size": 12, "ws_ping_interval": 1.5, "ws_ping_timeout": 2.5, "ws_max_queue": 3,
               "http": "1", "http2_max_streams": 7, "http2_engine": "zttp",
               "max_restarts": 4, "min_uptime": "500ms", "restart_delay": "2s", "exp_backoff_restart_delay": 250,
               "stop_exit_codes": [3, 4], "autorestart": False, "unix_mode": "0660", "unix_group": grp.getgrgid(os.getgid()).gr_name,
               "instance_var": "NODE_APP_INSTANCE", "kill_signal": "SIGTERM", "kill_timeout": "3s",
               "interpreter": "python3", "log_json_time": "epoch", "log_max_line": 4096,
               "access_log_format": "%(h)s %(s)s", "access_log_file": "a.log", "log_level": "warning",
               "env_file": str(tmp_path / "empty.env")}
    (tmp_path / "empty.env").write_text("# nothing: --env's K stays the only variable\n")
    parsed = {"min_uptime": 0.5, "restart_delay": 2.0, "exp_backoff_restart_delay": 0.25,  # PM2's milliseconds
              "kill_timeout": 3.0}
    # --host and --port become the bind (test_host_and_port_make_one_bind)
    assert set(samples) == {option.name for option in OPTIONS if option.file} - {"host", "port"}
    assert all(samples[o.name] != o.default for o in OPTIONS if o.name in samples)
    toml = tmp_path / "prun.toml"
    lines = []
    for name, value in samples.items():
        key = BY_NAME[name].key
        if isinstance(value, dict):
            lines.append(f"{key} = {{ " + ", ".join(f'{k} = "{v}"' for k, v in value.items()) + " }")
        elif isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    toml.write_text("\n".join(lines) + "\n")
    from_file = config_mod.build({"config": str(toml)}, {})
    environ = {BY_NAME[name].env: ",".join(map(str, v)) if isinstance(v, list) else
               "K=v" if isinstance(v, dict) else str(v) for name, v in samples.items()}
    from_env = config_mod.build({}, environ)
    for name, value in samples.items():
        assert getattr(from_file, name) == parsed.get(name, value), name
        assert getattr(from_env, name) == parsed.get(name, value), name


def test_precedence_command_line_environment_file_default(tmp_path):
    toml = tmp_path / "prun.toml"
    toml.write_text('app = "m:a"\ninstances = 2\nbind = ["127.0.0.1:2"]\ntimeout = 7\n')

    def build(cli, environ):
        return config_mod.build({"config": str(toml), **cli}, environ)

    assert (build({}, {}).instances, build({}, {}).bind, build({}, {}).backlog) == (2, ["127.0.0.1:2"], 2048)
    assert build({}, {"WEB_CONCURRENCY": "3", "PORT": "9"}).instances == 3
    assert build({}, {"WEB_CONCURRENCY": "3", "PORT": "9"}).bind == ["0.0.0.0:9"]
    assert build({}, {"WEB_CONCURRENCY": "3", "PRUN_INSTANCES": "4"}).instances == 4
    assert build({}, {"PORT": "9", "PRUN_BIND": "127.0.0.1:5"}).bind == ["127.0.0.1:5"]
    assert build({"instances": "5"}, {"WEB_CONCURRENCY": "3", "PRUN_INSTANCES": "4"}).instances == 5
    assert build({"timeout": "8"}, {"PRUN_TIMEOUT": "9"}).timeout == 8.0
    assert build({}, {"WEB_CONCURRENCY": "max"}).instances == cpu_count()
    assert build({}, {"FORWARDED_ALLOW_IPS": "10.0.0.0/8"}).forwarded_allow_ips == "10.0.0.0/8"  # uvicorn's, gunicorn's
    assert build({}, {"FORWARDED_ALLOW_IPS": "10.0.0.0/8", "PRUN_FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == "*"
    other = tmp_path / "other.toml"
    other.write_text('app = "m:b"\ninstances = 6\n')
    from_variable = config_mod.build({}, {"PRUN_CONFIG": str(other)})
    assert (from_variable.app, from_variable.instances, from_variable.config) == ("m:b", 6, str(other))
    assert build({}, {"PRUN_CONFIG": str(other)}).instances == 2  # --config beats PRUN_CONFIG
    with pytest.raises(UsageError, match="invalid WEB_CONCURRENCY: expected a number, 'max', 0 or -N, got 'lots'"):
        build({}, {"WEB_CONCURRENCY": "lots"})
    with pytest.raises(UsageError, match="invalid PRUN_TIMEOUT: expected a number"):
        build({}, {"PRUN_TIMEOUT": "soon"})


def test_web_concurrency_sets_the_workers_of_a_real_master(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", env={"WEB_CONCURRENCY": "2"})
    master.wait_ready()
    assert "ready: 2 workers" in master.output


def test_tool_prun_in_the_apps_pyproject_is_read(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.prun]\napp = "m:a"\n'
                                             'keepalive-timeout = 9\nenv = { A = "1" }\n')
    config = config_mod.build({"chdir": str(tmp_path)}, {})
    assert (config.app, config.keepalive_timeout, config.env) == ("m:a", 9.0, {"A": "1"})
    assert config.config == str(tmp_path / "pyproject.toml")
    with pytest.raises(UsageError, match="unknown setting 'config' in"):
        (tmp_path / "pyproject.toml").write_text('[tool.prun]\napp = "m:a"\nconfig = "other.toml"\n')
        config_mod.build({"chdir": str(tmp_path)}, {})


def test_tls_paths_reach_workers_absolute_and_the_key_password_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_mod.build({"app": "m:a", "certfile": "live/cert.pem", "keyfile_password": "s3cret"}, {})
    options = config.worker_options(0, 1, 0)
    assert options.certfile == str(tmp_path / "live" / "cert.pem")  # not relative to --chdir
    assert (options.keyfile, options.ca_certs, options.keyfile_password) == ("", "", "s3cret")
    assert BY_NAME["keyfile_password"].describe("s3cret") == "(hidden)"


def _run_values(*args: str) -> dict[str, object]:
    """What `prun run ARGS` hands to config.build, parsed by the click command the table makes."""
    from prun.cluster.cli import run_command

    with run_command.make_context("run", list(args)) as ctx:
        return {k: v for k, v in ctx.params.items() if k != "control_fd"}


def test_uvicorn_and_gunicorn_spellings_are_the_same_options(tmp_path):
    build = config_mod.build
    both = build(_run_values("m:a", "-w", "3", "--timeout-graceful-shutdown", "4", "--log-level", "trace"), {})
    assert (both.instances, both.graceful_timeout, both.log_level) == (3, 4.0, "debug")
    assert build(_run_values("m:a", "--workers", "2", "--log-level", "critical"), {}).log_level == "error"
    assert build(_run_values("m:a", "--workers", "2"), {}).instances == 2
    toml = tmp_path / "prun.toml"
    toml.write_text('app = "m:a"\nworkers = 5\ntimeout_graceful_shutdown = 6\n')
    from_file = build({"config": str(toml)}, {})
    assert (from_file.instances, from_file.graceful_timeout) == (5, 6.0)
    toml.write_text('app = "m:a"\nworkers = 5\ninstances = 2\n')
    with pytest.raises(UsageError, match="'instances' in .* sets instances a second time"):
        build({"config": str(toml)}, {})


def test_host_and_port_make_one_bind(tmp_path):
    def bind(*args: str, environ: dict[str, str] | None = None) -> list[str]:
        return config_mod.build(_run_values("m:a", *args), environ or {}).bind

    assert bind("--host", "0.0.0.0", "--port", "9000") == ["0.0.0.0:9000"]
    assert bind("--host", "0.0.0.0") == ["0.0.0.0:8000"]  # either alone: the other's default
    assert bind("--port", "9000") == ["127.0.0.1:9000"]
    assert bind("--host", "::") == ["[::]:8000"]
    assert bind("--port", "9000", environ={"PRUN_BIND": "127.0.0.1:1"}) == ["127.0.0.1:9000"]  # the CLI wins
    assert bind(environ={"PRUN_HOST": "0.0.0.0"}) == ["0.0.0.0:8000"]
    # the default bind is 0.0.0.0:$PORT where a platform sets PORT: --host or --port alone takes its other half
    assert bind("--host", "10.0.0.1", environ={"PORT": "5000"}) == ["10.0.0.1:5000"]
    assert bind("--port", "9000", environ={"PORT": "5000"}) == ["0.0.0.0:9000"]
    assert bind(environ={"PORT": "5000", "PRUN_HOST": "10.0.0.1"}) == ["10.0.0.1:5000"]
    toml = tmp_path / "prun.toml"
    toml.write_text('host = "0.0.0.0"\nport = 8080\n')
    assert bind("--config", str(toml)) == ["0.0.0.0:8080"]
    assert bind("--config", str(toml), "-b", "unix:/tmp/s") == ["unix:/tmp/s"]  # the CLI's bind beats the file's
    with pytest.raises(UsageError, match="--bind and --host/--port both given on the command line"):
        bind("--port", "9000", "-b", "127.0.0.1:1")
    with pytest.raises(UsageError, match="invalid --port '80000': expected a port number"):
        bind("--port", "80000")


def test_an_unknown_setting_suggests_the_nearest(tmp_path):
    toml = tmp_path / "prun.toml"
    for key, hint in (("worker", "workers"), ("keepalive_timout", "keepalive-timeout"), ("gracefultimeout",
                                                                                         "graceful-timeout")):
        toml.write_text(f'app = "m:a"\n{key} = 1\n')
        with pytest.raises(UsageError, match=f"unknown setting '{key}' in .* \\(did you mean {hint}\\?\\)"):
            config_mod.build({"config": str(toml)}, {})
    toml.write_text('app = "m:a"\nzzzzzz = 1\n')
    with pytest.raises(UsageError) as raised:
        config_mod.build({"config": str(toml)}, {})
    assert str(raised.value).endswith("unknown setting 'zzzzzz' in " + str(toml))  # nothing near: no guess
    result = subprocess.run(prun_command() + ["m:a", "--wrkers", "2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "'--workers'" in result.stderr, result.stderr


def test_a_real_master_with_uvicorns_flags_and_the_balancing_lines_only_at_debug(prun):
    master = prun("tcp:handle", "-w", "1", "--host", "127.0.0.1", "--port", "0")
    master.wait_ready()
    assert "ready: 1 worker of tcp:handle (gen 1)" in master.output
    assert "balance:" not in master.output  # the lone worker took over before the ready line, unsaid
    debug = prun("tcp:handle", "--workers", "1", "--port", "0", "--log-level", "debug")
    debug.wait_ready()
    assert "accepts alone" in debug.output  # before the ready line too


def test_log_levels_keep_what_they_say():
    import io

    from prun.cluster.log import Log

    for level, shown in (("debug", 4), ("info", 3), ("warning", 2), ("error", 1)):
        out = io.StringIO()
        log = Log(stream=out, level=level)
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        assert len(out.getvalue().splitlines()) == shown, (level, out.getvalue())


def test_an_app_file_takes_the_same_aliases_and_suggests_too(tmp_path):
    from prun.cluster.daemon import ecosystem

    apps = tmp_path / "prun.toml"
    apps.write_text('[[apps]]\ntarget = "m:a"\nworkers = 3\ntimeout-graceful-shutdown = 4\n')
    (app,) = ecosystem.read(str(apps))
    assert (app["instances"], app["graceful_timeout"]) == ("3", 4)
    apps.write_text('[[apps]]\ntarget = "m:a"\nworker = 3\n')
    with pytest.raises(UsageError, match=r"unknown key 'worker' \(did you mean workers\?\)"):
        ecosystem.read(str(apps))


def test_a_mistyped_prun_variable_is_warned_with_the_one_meant_and_the_others_are_left_alone(prun):
    master = prun("tcp:handle", "-b", "127.0.0.1:0", env={"PRUN_INSTANSES": "2", "PRUN_WORKERS": "2",
                                                          "PRUN_MY_APP_SETTING": "x", "PRUN_TIMEOUT": "30"})
    master.wait_ready()
    warnings = [line for line in master.output.splitlines() if "warning" in line]
    assert warnings == [
        "prun: warning: PRUN_INSTANSES is not one of prun's variables, and is ignored (did you mean PRUN_INSTANCES?)",
        "prun: warning: PRUN_WORKERS is not one of prun's variables, and is ignored (did you mean PRUN_INSTANCES?)",
    ]
    assert len(master.workers()) == 1  # what the typo meant was not taken
