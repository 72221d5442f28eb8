"""PM2's CLI habits on prun's daemon, end to end as PM2's e2e scripts run them (smart-start, startOrX,
multiparam, operate-regex, reset, sendSignal, aliases, log flags): the real `prun` against a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.daemon_support import Home
from tests.support import wait_until

SLEEPER = "sleep 1000"
SIGNALLED = """\
import os, signal, sys, time
signal.signal(signal.SIGUSR2, lambda *_: print("got USR2", flush=True))
print("MODE=" + os.environ.get("MODE", ""), flush=True)
print("an err line", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
"""
ECOSYSTEM = """\
[[apps]]
name = "one"
target = "job.py"
env = { MODE = "dev" }

[apps.env_production]
MODE = "prod"

[[apps]]
name = "two"
target = "sleep 1000"
"""


def failed(home: Home, *args: str, cwd: str | Path | None = None) -> str:
    """Run a command that must fail with one line on stderr; that line."""
    result = home.prun(*args, check=False, **({"cwd": cwd} if cwd else {}))
    assert result.returncode != 0, (args, result.stdout)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("prun: error: "), (args, result.stderr)
    return result.stderr


def states(home: Home) -> dict[str, tuple[str, int]]:
    return {row["name"]: (row["status"], row["restarts"]) for row in home.ls()}


def project(home: Home) -> Path:
    """A directory with job.py (prints its MODE, answers SIGUSR2) and prun.toml."""
    where = Path(home.root, "project")
    where.mkdir(exist_ok=True)
    (where / "job.py").write_text(SIGNALLED)
    (where / "prun.toml").write_text(ECOSYSTEM)
    return where


def log_of(home: Home, name: str, stream: str = "out") -> str:
    try:
        return Path(home.path, "logs", f"{name}-{stream}.log").read_text()
    except FileNotFoundError:
        return ""


def test_start_of_a_name_or_an_id_restarts_that_app(home: Home) -> None:
    home.prun("start", SLEEPER, "--name", "napper")
    first = home.app("napper")["pid"]
    home.prun("start", "napper")  # online: restarted, as PM2's smart start does
    row = home.app("napper")
    assert (row["status"], row["restarts"]) == ("online", 1) and row["pid"] != first
    home.prun("stop", "napper")
    home.prun("start", "0")  # an id: that app, not a new one running the command "0"
    assert [(r["id"], r["name"], r["status"]) for r in home.ls()] == [(0, "napper", "online")]
    pid = home.app("napper")["pid"]
    line = failed(home, "start", "napper", "-i", "2")  # options it cannot apply: said, and nothing done
    assert "napper is an app already" in line and "--instances" in line and "prun delete napper" in line
    assert home.app("napper")["pid"] == pid
    assert "no app named" in failed(home, "start", "7")
    home.prun("start", "napper", "--env", "MODE=x")  # --env is applied, as restart --env
    assert "MODE=x" in home.prun("env", "napper").stdout.splitlines()


def test_start_of_a_stopped_script_applies_the_options_given_now(home: Home) -> None:
    where = project(home)
    home.prun("start", "job.py", "--env", "MODE=a", cwd=where)
    wait_until(lambda: "MODE=a" in log_of(home, "job"), what="job's first line")
    line = failed(home, "start", "job.py", cwd=where)  # running: PM2's "already launched"
    assert "already exists" in line
    home.prun("stop", "job")
    home.prun("start", "job.py", "--env", "MODE=b", "-i", "2", cwd=where)
    row = home.app("job")
    assert (row["status"], row["workers"], row["id"]) == ("online", 2, 0)
    wait_until(lambda: log_of(home, "job").count("MODE=b") >= 2, what="both new instances' lines")


def test_ecosystem_file_start_again_restart_reload_only_and_env_sections(home: Home) -> None:
    where = project(home)
    assert "no [apps.env_prodution] section" in failed(home, "start", "prun.toml", "--env", "prodution", cwd=where)
    assert home.ls() == []  # a misspelt section is not the base env: nothing started
    assert "no app 'three'" in failed(home, "start", "prun.toml", "--only", "one,three", cwd=where)
    home.prun("start", "prun.toml", "--only", "one", cwd=where)
    assert states(home) == {"one": ("online", 0)}
    home.prun("start", "prun.toml", cwd=where)  # again: the running app restarted, the new one started
    assert states(home) == {"one": ("online", 1), "two": ("online", 0)}
    home.prun("restart", "prun.toml", "--env", "production", cwd=where)
    assert "MODE=prod" in home.prun("env", "one").stdout.splitlines()
    wait_until(lambda: "MODE=prod" in log_of(home, "one"), what="one's line with the production env")
    home.prun("delete", "two")
    supervisor = home.app("one")["pid"]
    home.prun("reload", "prun.toml", "--env", "production", cwd=where)  # reloads one, starts two again
    assert states(home) == {"one": ("online", 3), "two": ("online", 0)}
    assert home.app("one")["pid"] == supervisor  # reloaded, not restarted
    result = home.prun("startOrReload", "prun.toml", cwd=where)  # the base env: only a restart can apply it
    assert "one: restarted, not reloaded" in result.stderr
    assert "MODE=dev" in home.prun("env", "one").stdout.splitlines() and home.app("one")["pid"] != supervisor
    home.prun("stop", "prun.toml", "--only", "two", cwd=where)
    home.prun("startOrRestart", "prun.toml", cwd=where)
    assert {name: status for name, (status, _) in states(home).items()} == {"one": "online", "two": "online"}
    assert "takes a prun.toml" in failed(home, "startOrRestart", "one")


def test_several_targets_a_regex_a_script_a_namespace_and_all(home: Home) -> None:
    where = project(home)
    home.prun("start", SLEEPER, "--name", "a")
    home.prun("start", SLEEPER, "--name", "b", "--namespace", "web")
    home.prun("start", "job.py", cwd=where)
    home.prun("stop", "a", "b")
    assert states(home) == {"a": ("stopped", 0), "b": ("stopped", 0), "job": ("online", 0)}
    job = home.app("job")["pid"]
    assert "'nope'" in failed(home, "restart", "job", "nope")  # one unknown target: nothing is done
    assert home.app("job")["pid"] == job and home.app("a")["status"] == "stopped"
    home.prun("start", "a", "web")  # a name and a namespace
    assert {r["status"] for r in home.ls()} == {"online"}
    home.prun("stop", "/^[ab]$/")
    assert states(home)["a"][0] == states(home)["b"][0] == "stopped" and states(home)["job"][0] == "online"
    assert "no app name matches /^z/" in failed(home, "stop", "/^z/")
    home.prun("stop", "job.py", cwd=where)  # the script's file name
    assert home.app("job")["status"] == "stopped"
    home.prun("delete", "all")
    for command in ("stop", "restart", "reload", "delete"):
        assert "prun ls is empty" in failed(home, command, "all")


def test_reset_pid_send_signal_and_reload_update_env(home: Home) -> None:
    where = project(home)
    home.prun("start", "job.py", "--env", "MODE=dev", cwd=where)
    wait_until(lambda: "MODE=dev" in log_of(home, "job"), what="job to set its handler")
    home.prun("restart", "job")
    wait_until(lambda: log_of(home, "job").count("MODE=dev") >= 2, what="job to set its handler again")
    assert home.app("job")["restarts"] == 1
    home.prun("reset", "job")
    row = home.app("job")
    assert row["restarts"] == 0 and row["status"] == "online"
    assert home.prun("pid", "job").stdout.split() == [str(row["pid"])]
    out = home.prun("sendSignal", "SIGUSR2", "job").stdout
    assert out.startswith("sent SIGUSR2 to job")
    wait_until(lambda: "got USR2" in log_of(home, "job"), what="the instance to get SIGUSR2")
    assert "unknown signal 'SIGNOPE'" in failed(home, "sendSignal", "SIGNOPE", "job")
    home.prun("reload", "job", "--update-env", env={"FROM_SHELL": "yes"})  # a new environment: a restart
    assert "FROM_SHELL=yes" in home.prun("env", "job").stdout.splitlines()
    home.prun("stop", "job")
    assert home.prun("pid", "job").stdout.split() == ["0"]
    assert "job is stopped: no process to signal" in failed(home, "sendSignal", "USR2", "job")
    assert "no app named" in failed(home, "pid", "nope")


def test_aliases_pm2_users_type_and_logs_err_out(home: Home) -> None:
    where = project(home)
    home.prun("start", "job.py", cwd=where)
    wait_until(lambda: "an err line" in log_of(home, "job", "err"), what="job's err line")
    for alias in ("list", "status", "ps"):
        lines = home.prun(alias).stdout.splitlines()  # the table (its widths follow the cpu and memory shown)
        assert lines[1].split() == ["│", "id", "│", "name", "│", "namespace", "│", "mode", "│", "pid", "│", "uptime",
                                    "│", "↺", "│", "status", "│", "cpu", "│", "mem", "│", "workers", "│"]
        assert lines[3].split()[1:4] == ["0", "│", "job"], lines
    assert [row["name"] for row in json.loads(home.prun("jlist").stdout)] == ["job"]
    described = home.prun("describe", "job").stdout.splitlines()[0]
    for alias in ("show", "info", "desc"):
        assert home.prun(alias, "job").stdout.splitlines()[0] == described
    err = home.prun("logs", "job", "--err", "--nostream").stdout
    out = home.prun("log", "job", "--out", "--nostream").stdout
    assert "an err line" in err and "MODE=" not in err
    assert "MODE=" in out and "an err line" not in out


def test_log_flags_output_error_combined_dev_null_and_date_format(home: Home) -> None:
    where = project(home)
    out, err, combined = (str(where / name) for name in ("o.log", "e.log", "all.log"))
    home.prun("start", "job.py", "-o", out, "-e", err, "-l", combined, "--log-date-format", "@%Y@", cwd=where)
    year = subprocess.run(["date", "+%Y"], capture_output=True, text=True).stdout.strip()
    wait_until(lambda: os.path.exists(combined) and "an err line" in open(combined).read()
               and "MODE=" in open(combined).read(), what="both lines in the combined log")
    assert open(out).read().startswith(f"@{year}@ MODE=")  # --log-date-format alone stamps the lines
    assert "an err line" in open(err).read() and "MODE=" not in open(err).read()
    home.prun("start", "job.py", "--name", "quiet", "-o", "/dev/null", "-e", "/dev/null", cwd=where)
    assert home.app("quiet")["status"] == "online"
    log_writer = int(next(line.split()[-1] for line in home.prun("describe", "quiet").stdout.splitlines()
                          if line.strip().startswith("log writer pid")))
    opened = [os.readlink(f"/proc/{log_writer}/fd/{fd}") for fd in os.listdir(f"/proc/{log_writer}/fd")]
    assert not any(path.startswith("/dev/null.") for path in opened), opened  # no lock file in /dev
    result = home.prun("flush")
    assert f"flushed {out}" in result.stdout and "/dev/null" not in result.stdout + result.stderr
    assert os.path.getsize(combined) == 0


def test_restart_all_with_a_broken_app_restarts_the_others_and_shows_the_table(home: Home) -> None:
    home.prun("start", SLEEPER, "--name", "napper", "--min-uptime", "200")
    home.prun("start", "crasher.py", "--max-restarts", "1", check=False)
    wait_until(lambda: states(home)["crasher"][0] == "errored", what="crasher errored")
    pid = home.app("napper")["pid"]
    result = home.prun("restart", "all", check=False)  # napper restarts; crasher fails again
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "crasher could not start" in result.stderr
    assert "napper" in result.stdout and "crasher" in result.stdout  # the table all the same
    row = home.app("napper")
    assert row["status"] == "online" and row["pid"] != pid  # done before the reply, not left launching


def test_start_of_several_goes_on_past_one_that_cannot_start(home: Home) -> None:
    result = home.prun("start", "crasher.py", SLEEPER, "--max-restarts", "1", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "crasher could not start" in result.stderr
    assert "crasher" in result.stdout and "sleep" in result.stdout  # the table, then the line
    assert states(home)["sleep"][0] == "online"
