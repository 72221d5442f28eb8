"""save / kill / resurrect, the ecosystem file, and the boot unit."""

from __future__ import annotations

import json
import os

from prun.cluster.daemon.home import start_time
from tests.daemon_support import Home, get
from tests.support import APPS, wait_until


def test_save_kill_resurrect_brings_the_same_apps_back(home: Home) -> None:
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "-i", "2", "--name", "api",
              "--namespace", "web", "--env", "GREETING=saved", "--balance", "shared",
              env={"SECRET_OF_THE_SHELL": "do-not-dump", "FROM_THE_SHELL": "kept"})
    home.prun("start", "sleep 1000", "--name", "sleeper")
    home.prun("start", "sleep 1000", "--name", "resting")
    home.prun("stop", "resting")
    assert "saved 3 apps" in home.prun("save", "--filter-env", "SECRET_").stdout
    dump = open(os.path.join(home.path, "dump.json")).read()
    assert "do-not-dump" not in dump and "SECRET_OF_THE_SHELL" not in dump  # left out, as asked
    saved = json.loads(dump)["apps"][0]
    assert saved["env"] == {"GREETING": "saved"} and saved["environ"]["FROM_THE_SHELL"] == "kept"
    assert oct(os.stat(os.path.join(home.path, "dump.json")).st_mode & 0o777) == "0o600"
    daemon = home.daemon_pid()
    home.prun("kill")
    assert daemon and start_time(daemon) is None and not home.ours()
    home.prun("resurrect")  # from a shell without FROM_THE_SHELL: the app gets the environment it was saved with
    assert "FROM_THE_SHELL=kept" in home.prun("env", "api").stdout
    rows = {row["name"]: row for row in home.ls()}
    assert set(rows) == {"api", "sleeper", "resting"}
    api = rows["api"]
    assert (api["status"], api["workers"], api["namespace"], api["mode"]) == ("online", 2, "web", "cluster")
    assert rows["sleeper"]["status"] == "online" and rows["resting"]["status"] == "stopped"
    assert get(home.port("api")).startswith("saved ")
    spec = home.prun("describe", "api").stdout
    assert "--balance shared" in spec and "GREETING=saved" in spec


def test_a_corrupt_dump_is_refused_with_the_reason_and_kept(home: Home) -> None:
    home.prun("ping")
    path = os.path.join(home.path, "dump.json")
    for content, reason in (('{"version": 1, "apps": [', "not valid JSON"),
                            ('{"version": 9, "apps": []}', "not a prun dump of version 1"),
                            ('{"version": 1, "apps": [{"name": "x"}]}', "app 'x': target is missing")):
        with open(path, "w") as fh:
            fh.write(content)
        result = home.prun("resurrect", check=False)
        assert result.returncode == 1 and reason in result.stderr and "kept" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
        assert open(path).read() == content
    os.unlink(path)
    result = home.prun("resurrect", check=False)
    assert result.returncode == 1 and "prun save first" in result.stderr


def test_a_broken_dump_falls_back_to_its_backup(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "first")
    home.prun("save")
    home.prun("start", "sleep 1000", "--name", "second")
    home.prun("save")  # the first dump is dump.json.bak now
    path = os.path.join(home.path, "dump.json")
    with open(path, "w") as fh:
        fh.write('{"version": 1, "apps": [')  # edited by hand, and broken
    home.prun("kill")
    home.prun("resurrect")
    assert [row["name"] for row in home.ls()] == ["first"]
    log = open(os.path.join(home.path, "daemon.log")).read()
    assert "not valid JSON" in log and "resurrecting the backup" in log


def test_ecosystem_file_start_reload_delete(home: Home) -> None:
    eco = os.path.join(home.root, "prun.toml")
    with open(eco, "w") as fh:
        fh.write(f'''
[[apps]]
name = "api"
target = "greeter:app"
cwd = "{APPS}"
instances = 2
bind = "127.0.0.1:0"
lifespan = "off"
env = {{ GREETING = "dev" }}

[apps.env_production]
GREETING = "prod"

[[apps]]
target = "sleep 1000"
name = "jobs"
''')
    home.prun("start", eco, "--env", "production")
    rows = {row["name"]: row for row in home.ls()}
    assert rows["api"]["workers"] == 2 and rows["jobs"]["mode"] == "fork"
    assert get(home.port("api")).startswith("prod ")
    home.prun("reload", eco)
    assert {row["name"]: row["restarts"] for row in home.ls()} == {"api": 1, "jobs": 1}
    home.prun("delete", eco)
    assert home.ls() == []
    with open(eco, "w") as fh:
        fh.write('[[apps]]\ntarget = "greeter:app"\nwat = 1\n')
    result = home.prun("start", eco, check=False)
    assert result.returncode == 2 and "unknown key 'wat'" in result.stderr


def test_startup_systemd_prints_and_installs_a_unit(home: Home) -> None:
    unit = home.prun("startup", "systemd").stdout
    assert "ExecStart=" in unit and unit.split("ExecStart=")[1].split("\n")[0].endswith(" resurrect")
    assert f"Environment=PRUN_HOME={home.path}" in unit and "KillMode=process" in unit
    target = os.path.join(home.root, "units")
    out = home.prun("startup", "systemd", "--install", "--unit-dir", target).stdout
    written = os.path.join(target, os.listdir(target)[0])
    assert written in out and open(written).read() == unit


def test_resurrect_with_an_app_saved_errored_starts_the_others_and_shows_the_table(home: Home) -> None:
    home.prun("start", "sleep 1000", "--name", "sleeper")
    home.prun("start", "crasher.py", "--max-restarts", "1", check=False)
    wait_until(lambda: home.app("crasher")["status"] == "errored", what="crasher errored")
    home.prun("save")
    home.prun("kill")
    result = home.prun("resurrect", check=False)  # crasher is tried again, and fails again
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "crasher could not start" in result.stderr
    assert "sleeper" in result.stdout and "crasher" in result.stdout  # the table, all the same
    assert home.app("sleeper")["status"] == "online"
