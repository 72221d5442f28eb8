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

README = Path(__file__).resolve().parent.parent / "README.md"
# WorkerOptions fields the master sets itself; they are not options a user gives.
MASTER_SET = {"slot", "generation", "heartbeat_interval", "drain_idle_window", "server_header", "access_log_fd"}


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
    assert text[start:end].strip() == readme_table(), "run: python -m prun.cluster.options README.md"


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
               "http": "1", "http2_max_streams": 7,
               "max_restarts": 4, "min_uptime": "500ms", "restart_delay": "2s", "exp_backoff_restart_delay": 250,
               "stop_exit_codes": [3, 4], "unix_mode": "0660", "unix_group": grp.getgrgid(os.getgid()).gr_name,
               "instance_var": "NODE_APP_INSTANCE", "kill_signal": "SIGTERM", "kill_timeout": "3s",
               "interpreter": "python3", "log_json_time": "epoch", "log_max_line": 4096,
               "access_log_format": "%(h)s %(s)s", "access_log_file": "a.log"}
    parsed = {"min_uptime": 0.5, "restart_delay": 2.0, "exp_backoff_restart_delay": 0.25,  # PM2's milliseconds
              "kill_timeout": 3.0}
    assert set(samples) == {option.name for option in OPTIONS if option.file}
    assert all(samples[o.name] != o.default for o in OPTIONS if o.file)
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
