"""The schema of app specs (cluster/daemon/schema.py): every source checked, defaults from the option table.

A spec reaches the daemon in a `start` request (from `prun start`, a prun.toml, or any program), in the
dump `prun resurrect` reads, and in the app records a new daemon adopts. Whatever does not fit is one
sentence naming the source, the app and the field, and nothing is started; app names never lead a file
out of $PRUN_HOME/logs/.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from prun.cluster.daemon.home import start_time
from prun.cluster.daemon.schema import FORK_KILL_TIMEOUT
from prun.cluster.names import shown
from prun.cluster.options import BY_NAME
from tests.daemon_support import Home, call, get, request
from tests.support import APPS, wait_until

NAME_RULE = "a name is 1 to 64 letters, digits or . _ - @ + (not starting with '.', no '..')"
CLUSTER = {"name": "web", "target": "greeter:app", "mode": "cluster", "cwd": str(APPS), "bind": ["127.0.0.1:0"],
           "run_args": ["--lifespan", "off"]}
FORK = {"name": "napper", "target": "sleep 1000", "mode": "fork", "cwd": "/", "command": ["sleep", "1000"]}

# (a change to CLUSTER, what the one line says after "the start request: ")
BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"graceful_timeout": "x"}, "app 'web': graceful_timeout must be a number"),
    ({"graceful_timeout": -1}, "app 'web': invalid graceful_timeout: expected a non-negative number, got -1.0"),
    ({"graceful_timeout": 10**400}, "app 'web': graceful_timeout must be a number"),
    ({"backlog": 1e300}, "app 'web': backlog must be a whole number"),
    ({"backlog": 1 << 40}, "app 'web': invalid backlog: expected at most 65535"),
    ({"instances": "lots"}, "app 'web': invalid instances: expected a number, 'max', 0 or -N, got 'lots'"),
    ({"instances": [2]}, "app 'web': instances must be a string or a whole number"),
    ({"name": "../x"}, f"app '../x': invalid name: {NAME_RULE}"),
    ({"name": "a\nb"}, f"app 'a\\nb': invalid name: {NAME_RULE}"),
    ({"name": 7}, "an app without a name: name must be a string"),
    ({"namespace": "a b"}, f"app 'web': invalid namespace: {NAME_RULE}"),
    ({"colour": "blue", "size": 1}, "app 'web': unknown fields 'colour', 'size'"),
    ({"run_args": ["--timeout", "soon"]}, "app 'web': invalid run_args: invalid --timeout 'soon': expected a number"),
    ({"run_args": ["--no-such"]}, "app 'web': invalid run_args: '--no-such' is not an option of prun run"),
    ({"run_args": ["--log-file", "/tmp/x"]}, "app 'web': invalid run_args: '--log-file' is an option the spec"),
    ({"run_args": ["--timeout"]}, "app 'web': invalid run_args: --timeout needs a value"),
    ({"run_args": "--lifespan off"}, "app 'web': run_args must be a list of strings"),
    ({"bind": ["fd://3"]}, "app 'web': invalid bind: fd://3: the daemon binds an app's addresses itself"),
    ({"bind": ["unix:app.sock"]}, "app 'web': invalid bind: unix:app.sock: a unix: path in a spec is absolute"),
    ({"bind": ["nonsense"]}, "app 'web': invalid bind: invalid bind address 'nonsense'"),
    ({"bind": []}, "app 'web': a cluster-mode app needs a bind list"),
    ({"env": {"A=B": "1"}}, "app 'web': invalid env: 'A=B' cannot name an environment variable"),
    ({"env": {"A": 1}}, "app 'web': env must be an object of strings"),
    ({"cwd": "relative"}, "app 'web': invalid cwd: expected an absolute path, got 'relative'"),
    ({"cwd": "/tmp\0/x"}, "app 'web': invalid cwd: it holds a NUL character"),
    ({"mode": "thread"}, "app 'web': invalid mode: expected cluster or fork, got 'thread'"),
    ({"target": "nonsense"}, "app 'web': invalid target 'nonsense': a cluster-mode target is MODULE:ATTR"),
    ({"log_file": "out.log"}, "app 'web': invalid log_file: expected an absolute path, got 'out.log'"),
    ({"log_retain": "5"}, "app 'web': log_retain must be a whole number"),
    ({"autorestart": "yes"}, "app 'web': autorestart must be true or false"),
    ({"command": ["sleep", "1"]}, "app 'web': command is for fork mode only"),
    ({"target": None}, "app 'web': target must be a string"),
]


def _files(root: str) -> set[str]:
    return {os.path.join(d, f) for d, dirs, files in os.walk(root) for f in files + dirs}


def test_a_start_request_that_does_not_fit_is_refused_in_one_sentence_and_starts_nothing(home: Home) -> None:
    home.prun("ping")
    daemon = home.daemon_pid()
    for change, message in BAD_SPECS:
        reply = call(home, "start", spec={**CLUSTER, **change}, env={})
        assert reply["error"] == {"code": "BAD_ARGUMENTS", "message": reply["error"]["message"]}, (change, reply)
        assert reply["error"]["message"].startswith(f"the start request: {message}"), (change, reply)
        assert "\n" not in reply["error"]["message"]
    reply = call(home, "start", spec=CLUSTER, env={"A=B": "1"})  # the caller's environment is checked too
    assert reply["error"]["message"] == "invalid environment: 'A=B' cannot name an environment variable"
    assert home.ls() == [] and home.daemon_pid() == daemon
    assert os.listdir(os.path.join(home.path, "logs")) == [] and os.listdir(os.path.join(home.path, "apps")) == []


def test_fields_left_out_take_the_option_tables_defaults_and_fork_mode_its_kill_timeout(home: Home) -> None:
    home.prun("ping")
    for spec in (CLUSTER, FORK):
        assert "result" in call(home, "start", spec=spec, env={"PATH": os.environ["PATH"]}), spec
    specs = {row["name"]: row["spec"] for row in call(home, "describe", target="all")["result"]}
    web, napper = specs["web"], specs["napper"]
    assert web["graceful_timeout"] == BY_NAME["graceful_timeout"].default == 25.0
    assert napper["graceful_timeout"] == FORK_KILL_TIMEOUT == 5.0  # PM2's kill_timeout, not a drain
    for field in ("backlog", "log_max_size", "log_retain", "log_compress", "log_rotate_daily", "merge_logs"):
        assert web[field] == napper[field] == BY_NAME[field].default, field
    assert web["instances"] == napper["instances"] == "1" and napper["bind"] == []
    assert (web["namespace"], web["autorestart"], web["log_time"], web["env"]) == ("default", True, "", {})
    # the command line sends what it was given and nothing else: the same defaults
    home.prun("start", "sleep 1000", "--name", "cli-napper")
    home.prun("start", "sleep 1000", "--name", "patient", "--graceful-timeout", "2")
    specs = {row["name"]: row["spec"] for row in call(home, "describe", target="all")["result"]}
    assert specs["cli-napper"]["graceful_timeout"] == 5.0 and specs["patient"]["graceful_timeout"] == 2.0
    result = home.prun("start", "sleep 1000", "--name", "x", "--graceful-timeout", "soon", check=False)
    assert (result.returncode, result.stderr) == (2, "prun: error: invalid --graceful-timeout 'soon': expected a "
                                                     "number, got 'soon'\n")
    assert get(home.port("web")).startswith("hello")
    home.prun("stop", "all")
    home.prun("delete", "all")
    assert home.ls() == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "a b", "tab\there", "x" * 65, "caf\u00e9", "a..b"])
def test_a_name_that_could_leave_the_logs_folder_is_refused_before_anything_is_written(home: Home, name: str) -> None:
    home.prun("ping")
    before = _files(home.root)
    for target in ("tcp:handle", "sleep 1000"):
        result = home.prun("start", target, "-b", "127.0.0.1:0", "--name", name, check=False)
        assert (result.returncode, result.stderr) == (2, f"prun: error: invalid --name {shown(name)}: {NAME_RULE}\n")
    reply = call(home, "start", spec={**CLUSTER, "name": name}, env={})
    assert reply["error"]["code"] == "BAD_ARGUMENTS" and reply["error"]["message"].endswith(f"invalid name: {NAME_RULE}")
    assert _files(home.root) == before and home.ls() == []


def test_names_are_checked_in_prun_run_and_in_a_prun_toml_and_derived_names_are_made_valid(home: Home) -> None:
    result = home.prun("tcp:handle", "-b", "127.0.0.1:0", "--name", "../x", check=False)
    assert (result.returncode, result.stderr) == (2, f"prun: error: invalid --name '../x': {NAME_RULE}\n")
    eco = os.path.join(home.root, "prun.toml")
    Path(eco).write_text('[[apps]]\ntarget = "sleep 1000"\nname = "../x"\n')
    result = home.prun("start", eco, check=False)
    assert (result.returncode, result.stderr) == (2, f"prun: error: [[apps]] 1 in {eco}: invalid name '../x': "
                                                     f"{NAME_RULE}\n")
    Path(eco).write_text('[[apps]]\ntarget = "sleep 1000"\nnamespace = 3\n')
    result = home.prun("start", eco, check=False)
    assert (result.returncode, result.stderr) == (2, f"prun: error: [[apps]] 1 in {eco}: namespace must be a string\n")
    Path(eco).write_text(f'[[apps]]\ntarget = "greeter:app"\ncwd = "{APPS}"\nbind = "127.0.0.1:0"\n'
                         'graceful-timeout = "soon"\n')
    result = home.prun("start", eco, check=False)
    assert result.returncode == 2 and result.stderr == (f"prun: error: {eco}: app 'greeter': invalid "
                                                        "--graceful-timeout 'soon': expected a number, got 'soon'\n")
    assert home.ls() == []
    script = os.path.join(home.root, "my job!.py")
    Path(script).write_text("import time\ntime.sleep(1000)\n")
    home.prun("start", repr(script))  # a derived name keeps what it can: my-job-
    home.prun("start", "sleep 1000", "--name", "api.v2_x-y@z+1", "--namespace", "team@2")
    rows = {row["name"]: row for row in home.ls()}
    assert set(rows) == {"my-job-", "api.v2_x-y@z+1"} and rows["api.v2_x-y@z+1"]["namespace"] == "team@2"
    logs = sorted(os.listdir(os.path.join(home.path, "logs")))
    assert "api.v2_x-y@z+1-out.log" in logs and "my-job--err.log" in logs


def _write_dump(home: Home, apps: list[Any]) -> str:
    path = os.path.join(home.path, "dump.json")
    with open(path, "w") as fh:
        json.dump({"version": 1, "apps": apps}, fh)
    return path


def test_a_dump_that_does_not_fit_is_refused_naming_the_file_and_the_app_and_kept(home: Home) -> None:
    home.prun("ping")
    good = {**FORK, "stopped": False}
    for bad, reason in (({**CLUSTER, "graceful_timeout": "x"}, "app 'web': graceful_timeout must be a number"),
                        ({**CLUSTER, "colour": "blue"}, "app 'web': unknown field 'colour'"),
                        ({**CLUSTER, "name": "../x"}, f"app '../x': invalid name: {NAME_RULE}"),
                        ({**CLUSTER, "stopped": "no"}, "stopped must be true or false"),
                        ({**FORK, "command": []}, "app 'napper': a fork-mode app needs a command")):
        path = _write_dump(home, [good, bad])
        content = open(path).read()
        result = home.prun("resurrect", check=False)
        assert result.returncode == 1
        assert result.stderr == f"prun: error: refusing the dump {path}: {reason}; it is kept as it is\n"
        assert open(path).read() == content and home.ls() == []  # not even the good app was started
    path = os.path.join(home.path, "dump.json")
    with open(path, "w") as fh:
        fh.write('{"version": 1, "apps": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    result = home.prun("resurrect", check=False)
    assert result.stderr == (f"prun: error: refusing the dump {path}: it is nested deeper than 32 levels; it is kept "
                             "as it is\n")
    # a dump of an older prun: max_memory became --max-memory-restart
    _write_dump(home, [{**CLUSTER, "max_memory": 300 << 20, "stopped": True}])
    home.prun("resurrect")
    (row,) = call(home, "describe", target="web")["result"]
    assert row["status"] == "stopped" and row["spec"]["run_args"][-2:] == ["--max-memory-restart", str(300 << 20)]


def test_app_records_are_checked_when_a_new_daemon_adopts_them(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "napper")
    pid = home.app("napper")["pid"]
    daemon = home.daemon_pid()
    assert daemon
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: start_time(daemon) is None, what="the daemon to die")
    apps = os.path.join(home.path, "apps")
    record = json.loads(Path(apps, "0.json").read_text())
    stale = dict(record, pid=0, pid_started=None, holder_pid=0, log_pid=0, status="stopped")
    Path(apps, "0.json").write_text(json.dumps(dict(record, spec=dict(record["spec"], colour="blue"))))
    Path(apps, "5.json").write_text(json.dumps(dict(stale, id=5, spec=dict(record["spec"], name="../x"))))
    Path(apps, "6.json").write_text(json.dumps(dict(stale, id=6, spec=dict(record["spec"], name="late",
                                                                           graceful_timeout="x"))))
    Path(apps, "7.json").write_text("[" * 100_000 + "]" * 100_000)
    Path(apps, "8.json").write_text(json.dumps(dict(stale, id=8, base_env={"A": 1})))
    rows = home.ls()  # a new daemon reads them all
    assert [(row["name"], row["status"], row["pid"]) for row in rows] == [("napper", "online", pid)]  # adopted
    log = Path(home.path, "daemon.log").read_text()
    assert (f"the app record {apps}/0.json: app 'napper': ignoring unknown field 'colour' (another version of prun "
            "wrote them)") in log
    assert f"ignoring the app record {apps}/5.json: app '../x': invalid name: {NAME_RULE}" in log
    assert f"ignoring the app record {apps}/6.json: app 'late': graceful_timeout must be a number" in log
    assert f"ignoring the app record {apps}/7.json: nested deeper than 32 levels" in log
    assert f"ignoring the app record {apps}/8.json: base_env must be an object of strings" in log
    assert "Traceback" not in log
    home.prun("stop", "napper")
    home.prun("delete", "napper")
    assert home.ls() == []


def test_restart_env_is_checked_like_a_spec(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "napper")
    reply = request(home, b'{"id": 1, "command": "restart", "args": {"target": "napper", "env": {"A=B": "1"}}}\n')
    assert reply["error"] == {"code": "BAD_ARGUMENTS",
                              "message": "invalid environment: 'A=B' cannot name an environment variable"}
    assert home.app("napper")["status"] == "online"
