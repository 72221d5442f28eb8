"""Masters outlive the daemon: a new daemon adopts them (and their sockets); a crashed master is restarted."""

from __future__ import annotations

import os
import signal

from prun.cluster.daemon.home import start_time
from tests.daemon_support import Home, HttpLoad, get
from tests.support import wait_until

HTTP_APP = ("greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0")


def test_daemon_sigkilled_while_apps_serve_then_adopted(home: Home) -> None:
    home.prun("start", *HTTP_APP, "-i", "2", "--name", "api")
    home.prun("start", *HTTP_APP, "--name", "web")
    before = {row["name"]: row for row in home.ls()}
    port = home.port("api")
    daemon = home.daemon_pid()
    assert daemon
    with HttpLoad(port) as load:
        load.wait_requests(20)
        os.kill(daemon, signal.SIGKILL)
        wait_until(lambda: start_time(daemon) is None, what="the daemon to die")
        load.wait_requests(50)  # the apps serve on without a daemon
        after = {row["name"]: row for row in home.ls()}  # starts a new daemon, which adopts them
        assert home.daemon_pid() not in (None, daemon)
        for name in ("api", "web"):
            assert after[name]["pid"] == before[name]["pid"], name  # the same master, not restarted
            assert after[name]["status"] == "online" and after[name]["restarts"] == 0
            assert after[name]["workers"] == before[name]["workers"]
        # the new daemon got the sockets back: a restart still refuses nothing, reload works
        home.prun("restart", "api")
        home.prun("reload", "web")
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]
    assert home.app("api")["pid"] != before["api"]["pid"]
    assert get(home.port("web")).startswith("hello")


def test_update_replaces_the_daemon_and_keeps_the_apps(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api")
    master, daemon = home.app("api")["pid"], home.daemon_pid()
    out = home.prun("update").stdout
    assert "adopted 1 apps" in out
    assert home.daemon_pid() != daemon and home.app("api")["pid"] == master
    assert get(home.port("api")).startswith("hello")


def test_a_crashed_master_is_restarted_with_backoff(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api")
    port = home.port("api")
    first = home.app("api")["pid"]
    os.killpg(first, signal.SIGKILL)  # the master and its workers
    row = wait_until(lambda: (lambda r: r["status"] == "online" and r["pid"] not in (None, first) and r)(
        home.app("api")), what="a new master online")
    assert row["restarts"] == 1
    assert get(port).startswith("hello")  # the same socket, held by the daemon
    events = open(os.path.join(home.path, "daemon.log")).read()
    assert "api: exited" in events and "signal=SIGKILL" in events and "api: restarting delay=0.1" in events


def test_no_autorestart_leaves_a_crashed_master_errored(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api", "--no-autorestart")
    first = home.app("api")["pid"]
    os.killpg(first, signal.SIGKILL)
    row = wait_until(lambda: (lambda r: r["status"] == "errored" and r)(home.app("api")), what="errored")
    assert row["pid"] is None and row["restarts"] == 0 and "SIGKILL" in row["error"]


def holder_pid(home: Home, name: str) -> int:
    return int(home.prun("describe", name).stdout.split("holder pid")[1].split()[0])


def test_a_holder_that_dies_is_replaced_and_the_app_keeps_its_sockets(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api")
    port = home.port("api")
    holder = holder_pid(home, "api")
    with HttpLoad(port) as load:
        load.wait_requests(20)
        os.kill(holder, signal.SIGKILL)
        replaced = wait_until(lambda: (lambda p: p != holder and p)(holder_pid(home, "api")),
                              what="a new holder in describe")
        assert start_time(replaced) is not None
        home.prun("restart", "api")  # the new master gets the sockets the new holder keeps: none refused
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]


def test_without_its_holder_the_sockets_are_copied_back_from_the_master(home: Home) -> None:
    home.prun("start", *HTTP_APP, "--name", "api")
    holder = holder_pid(home, "api")
    daemon = home.daemon_pid()
    assert daemon
    for pid in (daemon, holder):  # the daemon first: no one replaces the holder
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda pid=pid: start_time(pid) is None, what="it to die")  # type: ignore[misc]
    port = home.port("api")  # a new daemon adopts the master; pidfd_getfd gives it the sockets
    assert "took its listeners back from master" in open(os.path.join(home.path, "daemon.log")).read()
    with HttpLoad(port) as load:
        load.wait_requests(20)
        home.prun("restart", "api")
        load.wait_requests(20)
    assert load.failed == 0, load.errors[:5]
    assert holder_pid(home, "api") != holder


def test_an_app_launching_when_the_daemon_dies_is_online_after_adoption(home: Home) -> None:
    import subprocess

    from tests.support import APPS, prun_command

    home.prun("ping")
    daemon = home.daemon_pid()
    assert daemon
    start = subprocess.Popen(prun_command() + ["start", *HTTP_APP, "--name", "slow", "--env", "SLOW_BOOT=2"],
                             cwd=APPS, env=home.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = os.path.join(home.path, "daemon.log")
    wait_until(lambda: "slow: started" in open(log).read(), what="the master to be started")
    os.kill(daemon, signal.SIGKILL)
    _, err = start.communicate(timeout=30)
    assert start.returncode == 1 and "the daemon closed the connection" in err
    err_log = os.path.join(home.path, "logs", "slow-err.log")
    wait_until(lambda: "prun: ready: " in open(err_log).read(), what="the master to be ready, with no daemon")
    row = home.app("slow")  # the new daemon asks the master its status over the control channel: online
    assert row["status"] == "online" and row["workers"] == 1 and row["restarts"] == 0 and get(home.port("slow")).startswith("hello")
