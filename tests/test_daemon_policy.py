"""The restart policy (PM2's max_restarts, min_uptime, stop_exit_codes), with a real daemon, masters and workers:
an app that cannot run ends errored with the reason, stops restarting and frees its port."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

import pytest

from tests.daemon_support import Home, free_port, get
from tests.support import Prun, wait_until

APP = ("greeter:app", "--lifespan", "off")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def status(home: Home, name: str, wanted: str) -> dict[str, object]:
    return wait_until(lambda: (lambda r: r["status"] == wanted and r)(home.app(name)), timeout=60,
                      what=f"{name} {wanted}")


def end_worker(port: int, code: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/exit?{code}")
        conn.getresponse()
    except (OSError, http.client.HTTPException):
        pass  # the worker ended before it answered: that is the point
    finally:
        conn.close()


def test_workers_that_crash_at_every_boot_end_the_app_errored_and_free_its_port(home: Home, tmp_path: Path) -> None:
    port = free_port()
    broken = tmp_path / "broken"
    home.prun("start", *APP, "-b", f"127.0.0.1:{port}", "--name", "api", "--max-restarts", "3",
              "--env", f"BOOT_FAIL_FILE={broken}")
    broken.touch()  # from now on a new worker cannot import the app
    end_worker(port, 1)
    row = status(home, "api", "errored")
    assert "3 times in a row" in str(row["error"]) or "4 times in a row" in str(row["error"]), row["error"]
    assert "the boot-fail file exists" in str(row["error"]) and "giving up (--max-restarts 3)" in str(row["error"])
    assert row["pid"] is None and refused(port)
    restarts = row["restarts"]
    broken.unlink()
    home.prun("start", *APP, "-b", f"127.0.0.1:{port}", "--name", "other")  # the port is free
    assert get(port).startswith("hello ")
    assert home.app("api")["restarts"] == restarts  # nothing kept spinning


def test_a_master_that_cannot_boot_is_errored_after_max_restarts(home: Home, tmp_path: Path) -> None:
    port = free_port()
    broken = tmp_path / "broken"
    broken.touch()
    began = time.monotonic()
    result = home.prun("start", *APP, "-b", f"127.0.0.1:{port}", "--name", "api", "--max-restarts", "2",
                       "--env", f"BOOT_FAIL_FILE={broken}", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "could not start" in result.stderr and "the boot-fail file exists" in result.stderr
    row = status(home, "api", "errored")
    assert "gave up after 3 unstable restarts in a row (--max-restarts 2)" in str(row["error"]), row["error"]
    assert row["restarts"] == 2 and refused(port) and time.monotonic() - began < 60
    broken.unlink()
    home.prun("start", "api")  # a start of an errored app starts it again
    assert status(home, "api", "online") and get(port).startswith("hello ")


def test_a_stop_exit_code_stops_the_app(home: Home) -> None:
    port = free_port()
    home.prun("start", *APP, "-b", f"127.0.0.1:{port}", "--name", "api", "--stop-exit-codes", "7")
    end_worker(port, 7)
    row = status(home, "api", "stopped")
    assert "exited with code 7, one of --stop-exit-codes" in str(row["error"]) and refused(port)
    end = home.prun("ls").stdout
    assert "stopped" in end


def test_another_exit_code_is_restarted(home: Home) -> None:
    port = free_port()
    home.prun("start", *APP, "-b", f"127.0.0.1:{port}", "--name", "api", "--stop-exit-codes", "7")
    end_worker(port, 8)
    wait_until(lambda: home.app("api")["restarts"] == 1, what="the worker restarted")
    assert home.app("api")["status"] == "online" and get(port).startswith("hello ")


def test_the_foreground_master_gives_up_too(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    master = Prun(*APP, "-b", "127.0.0.1:0", "--max-restarts", "2", env={"BOOT_FAIL_FILE": str(broken)})
    try:
        port = master.wait_ready()
        broken.touch()
        end_worker(port, 1)
        assert master.proc.wait(timeout=60) == 3
        master.wait_for(r"giving up \(--max-restarts 2\): stopping")
    finally:
        master.cleanup()


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_policy_value_is_one_line(home: Home, value: str) -> None:
    result = home.prun("start", *APP, "-b", "127.0.0.1:0", "--max-restarts", value, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--max-restarts" in result.stderr


def test_no_autorestart_leaves_a_crashed_worker_unreplaced_then_stops_with_the_last(home: Home) -> None:
    port = free_port()
    home.prun("start", *APP, "-b", f"127.0.0.1:{port}", "--name", "api", "-i", "2", "--no-autorestart")
    master = home.app("api")["pid"]
    end_worker(port, 1)
    row = wait_until(lambda: (lambda r: r["workers"] == 1 and r)(home.app("api")), timeout=60, what="one worker left")
    assert (row["status"], row["pid"], row["restarts"]) == ("online", master, 0)
    assert "exited with code 1 (--no-autorestart)" in str(row["error"]) and get(port).startswith("hello ")
    end_worker(port, 0)
    row = status(home, "api", "stopped")  # the last one exited 0: done, as PM2 shows it
    assert "no worker is left (--no-autorestart)" in str(row["error"]) and row["restarts"] == 0
    wait_until(lambda: refused(port), what="the port closed")  # (once the last processes holding it are gone)
    home.prun("restart", "api")
    assert (home.app("api")["workers"], home.app("api")["status"]) == (2, "online") and get(port).startswith("hello ")


def test_no_autorestart_workers_come_back_on_reload_and_a_last_crash_is_errored(home: Home) -> None:
    port = free_port()
    home.prun("start", *APP, "-b", f"127.0.0.1:{port}", "--name", "api", "-i", "2", "--no-autorestart")
    end_worker(port, 1)
    wait_until(lambda: home.app("api")["workers"] == 1, what="one worker left")
    home.prun("reload", "api")  # a reload rolls every slot: the empty one gets its worker again
    row = home.app("api")
    assert (row["workers"], row["status"]) == (2, "online")
    end_worker(port, 1)
    wait_until(lambda: home.app("api")["workers"] == 1, what="one worker left")
    home.prun("scale", "api", "2")  # so does a scale
    assert home.app("api")["workers"] == 2
    end_worker(port, 3)
    end_worker(port, 3)
    row = status(home, "api", "errored")  # the last one crashed: errored, with why
    assert "exited with code 3 and no worker is left (--no-autorestart)" in str(row["error"])
    wait_until(lambda: refused(port), what="the port closed")


def test_the_foreground_master_honours_no_autorestart(tmp_path: Path) -> None:
    master = Prun(*APP, "-b", "127.0.0.1:0", "-i", "2", "--no-autorestart", "--health", "127.0.0.1:0")
    try:
        health = int(master.wait_for(r"health endpoint on http://127\.0\.0\.1:(\d+)/readyz").group(1))
        port = master.wait_ready()
        end_worker(port, 1)
        master.wait_for(r"exited with code 1; not restarting it \(--no-autorestart\)")
        assert get(port).startswith("hello ") and len(master.workers()) == 1
        assert get(health, "/readyz") == "ready\n"  # one worker fewer, still serving: ready
        end_worker(port, 0)
        assert master.proc.wait(timeout=60) == 0
        master.wait_for(r"no worker is left \(--no-autorestart\): stopping")
    finally:
        master.cleanup()
