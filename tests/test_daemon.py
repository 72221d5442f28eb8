"""The PM2 workflow on prun's daemon, end to end: real daemon, masters, workers and sockets."""

from __future__ import annotations

import os
import re

from tests.daemon_support import Home, HttpLoad, get
from tests.support import wait_until

HTTP_APP = ("greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0")


def test_start_ls_reload_restart_stop_delete(home: Home) -> None:
    out = home.prun("start", *HTTP_APP, "-i", "2", "--name", "api", "--env", "GREETING=hi").stdout
    assert "api" in out and "online" in out  # the table after acting
    row = home.app("api")
    assert (row["status"], row["workers"], row["mode"], row["namespace"]) == ("online", 2, "cluster", "default")
    port = home.port("api")
    assert get(port).startswith("hi ")
    master = row["pid"]

    with HttpLoad(port) as load:
        load.wait_requests(20)
        home.prun("reload", "api")
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]
    row = home.app("api")
    assert row["restarts"] == 1 and row["pid"] == master and row["status"] == "online"

    with HttpLoad(port) as load:
        load.wait_requests(20)
        home.prun("restart", "api", "--env", "GREETING=howdy")
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]
    assert any(body.startswith("howdy ") for body in load.bodies)
    row = home.app("api")
    assert row["pid"] != master and row["restarts"] == 2 and row["workers"] == 2

    home.prun("stop", "api")
    assert home.app("api")["status"] == "stopped"
    try:
        get(port, timeout=2)
        raise AssertionError("a stopped app still answers")
    except ConnectionRefusedError:
        pass
    home.prun("delete", "api")
    assert home.ls() == []


def test_unknown_name_and_duplicate_start_are_one_line_and_exit_1(home: Home) -> None:
    for command in (("stop", "nope"), ("reload", "7"), ("restart", "nope"), ("describe", "nope"),
                    ("scale", "nope", "2")):
        result = home.prun(*command, check=False)
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1 and "no app named" in result.stderr, result.stderr
    home.prun("start", *HTTP_APP, "--name", "api")
    result = home.prun("start", *HTTP_APP, "--name", "api", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "already exists" in result.stderr
    home.prun("stop", "api")
    home.prun("start", *HTTP_APP, "--name", "api")  # a stopped name is started again
    assert home.app("api")["status"] == "online"


def test_restart_of_an_errored_app_starts_it_fresh(home: Home) -> None:
    flag = os.path.join(home.root, "fail")
    open(flag, "w").close()
    result = home.prun("start", *HTTP_APP, "--name", "broken", "--env", f"BOOT_FAIL_FILE={flag}", check=False)
    assert result.returncode == 1 and "could not start" in result.stderr and "boot-fail file" in result.stderr
    assert home.app("broken")["status"] in ("errored", "launching")  # crash-looping with backoff
    log = os.path.join(home.path, "daemon.log")
    delays = wait_until(lambda: (lambda d: len(d) >= 3 and d)(re.findall(r"broken: restarting delay=([\d.]+)",
                                                                          open(log).read())), timeout=30,
                        what="three restarts of the master")
    assert [float(d) for d in delays[:3]] == [0.1, 0.15, 0.225]  # the workers' backoff, for masters
    os.unlink(flag)
    home.prun("restart", "broken")
    row = home.app("broken")
    assert row["status"] == "online" and row["workers"] == 1
    assert get(home.port("broken")).startswith("hello ")


def test_logs_show_the_apps_output(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api")
    get(home.port("api"), "/say?marker-42")
    out = wait_until(lambda: (lambda o: "said marker-42" in o and o)(
        home.prun("logs", "api", "--nostream", "--lines", "50").stdout), what="the app's line in prun logs")
    assert "api | greeter imported in pid" in out
    assert "api | greeter says hello on stderr" in out
    assert os.path.exists(os.path.join(home.path, "logs", "api-out.log"))


def test_scale_up_and_down(home: Home) -> None:
    # uvicorn's spellings: --port becomes the bind the daemon binds (not an argument of the master), -w is -i
    home.prun("start", "greeter:app", "--lifespan", "off", "--port", "0", "--name", "api", "-w", "1")
    assert get(home.port("api")).startswith("hello ")
    home.prun("scale", "api", "3")
    assert home.app("api")["workers"] == 3
    home.prun("scale", "api", "-1")
    assert home.app("api")["workers"] == 2
    home.prun("scale", "api", "+1")
    assert home.app("api")["workers"] == 3
    for count in ("0", "-3", "-9"):  # never to nothing: a usage error, nothing scaled (prun stop stops an app)
        refused = home.prun("scale", "api", count, check=False)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused
        assert "an app keeps at least 1 (prun stop api stops it)" in refused.stderr, refused.stderr
        assert home.app("api")["workers"] == 3
    table = home.prun("ls").stdout
    assert re.search(r"│ api +│.*│ \d+[smhD] +│", table), table  # the uptime has its unit
    home.prun("restart", "api")  # the count is stored
    assert home.app("api")["workers"] == 3


def test_targets_all_ids_and_namespaces(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "a", "--namespace", "web")
    home.prun("start", *HTTP_APP, "--name", "b", "--namespace", "web")
    home.prun("start", *HTTP_APP, "--name", "c")
    home.prun("stop", "web")
    assert {r["name"]: r["status"] for r in home.ls()} == {"a": "stopped", "b": "stopped", "c": "online"}
    home.prun("restart", "0")
    assert home.app("a")["status"] == "online"
    home.prun("stop", "all")
    assert {r["status"] for r in home.ls()} == {"stopped"}
    home.prun("delete", "all")
    assert home.ls() == []


def test_logs_follow_what_the_app_prints_next(home: Home) -> None:
    import subprocess

    from tests.support import prun_command

    home.prun("start", *HTTP_APP, "--name", "api")
    port = home.port("api")
    proc = subprocess.Popen(prun_command() + ["logs", "api", "--lines", "100"], env=home.env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("==> ")  # the tail has begun: what follows is followed
        get(port, "/say?followed-7")
        seen = []
        while not any("api | said followed-7" in line for line in seen):
            line = proc.stdout.readline()
            assert line, seen
            seen.append(line)
    finally:
        proc.kill()
        proc.wait()


def test_prun_start_takes_every_option_of_prun_run() -> None:
    from prun.cluster.cli import run_command
    from prun.cluster.commands.start import command

    run = {(p.name, tuple(p.opts)) for p in run_command.params if p.name != "app" and not getattr(p, "hidden", False)}
    start = {(p.name, tuple(p.opts)) for p in command.params}
    assert run <= start, run - start
    assert {"name", "namespace", "env", "autorestart", "max_memory_restart", "targets"} <= {p.name for p in command.params}


def test_restart_update_env_takes_the_callers_environment(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api", env={"GREETING": "first"})
    port = home.port("api")
    assert get(port).startswith("first ")
    home.prun("restart", "api", env={"GREETING": "second"})  # without --update-env: the stored environment
    assert get(port).startswith("first ")
    home.prun("restart", "api", "--update-env", env={"GREETING": "second"})
    assert get(port).startswith("second ")
    assert "GREETING=second" in home.prun("env", "api").stdout.splitlines()


def test_a_failed_reload_says_why_and_the_old_workers_keep_serving(home: Home) -> None:
    flag = os.path.join(home.root, "fail")
    home.prun("start", *HTTP_APP, "--name", "api", "--env", f"BOOT_FAIL_FILE={flag}")
    port, master = home.port("api"), home.app("api")["pid"]
    open(flag, "w").close()  # the new generation cannot boot
    result = home.prun("reload", "api", check=False)
    assert result.returncode == 1 and "api: reload failed: " in result.stderr and "boot-fail file" in result.stderr
    assert result.stderr.count("\n") == 1
    assert get(port).startswith("hello ")
    row = home.app("api")
    assert row["status"] == "online" and row["pid"] == master
    assert "api: reload_failed reason=" in open(os.path.join(home.path, "daemon.log")).read()


def test_uptimes_have_a_unit() -> None:
    from prun.cluster.commands.table import uptime

    assert [uptime(s) for s in (0, 0.4, 59, 61, 7200, 90000)] == ["0s", "0s", "59s", "1m", "2h", "1D"]
