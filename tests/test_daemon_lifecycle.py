"""PM2's app lifecycle in fork mode and cluster mode, driven through the real CLI against a real daemon: a start
that cannot get online fails, the restart policy ends crash loops, the kill signal runs an app's cleanup,
shell syntax runs through a shell, and every worker knows its instance number."""

from __future__ import annotations

import time
from pathlib import Path

from tests.daemon_support import Home, get
from tests.support import APPS, wait_until


def row_when(home: Home, name: str, status: str) -> dict[str, object]:
    return wait_until(lambda: (lambda r: r["status"] == status and r)(home.app(name)), timeout=60,
                      what=f"{name} {status}")


def out_log(home: Home, name: str) -> str:
    path = Path(home.path, "logs", f"{name}-out.log")
    return path.read_text() if path.exists() else ""


def test_a_command_that_does_not_exist_fails_to_start_in_one_line(home: Home) -> None:
    result = home.prun("start", "eyayimfake", "--name", "fake", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot start instance 0 (eyayimfake): No such file or directory" in result.stderr
    row = row_when(home, "fake", "errored")
    assert "No such file or directory" in str(row["error"]) and row["restarts"] == 0


def test_a_script_that_exits_at_once_fails_to_start_and_ends_errored(home: Home) -> None:
    began = time.monotonic()
    result = home.prun("start", "crasher.py", "--max-restarts", "2", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "exited with code 1" in result.stderr and time.monotonic() - began < 30
    row = row_when(home, "crasher", "errored")
    assert "giving up (--max-restarts 2)" in str(row["error"])
    assert out_log(home, "crasher").count("crasher instance 0 started") == 3  # the first run and 2 restarts


def test_no_autorestart_leaves_a_finished_script_stopped(home: Home) -> None:
    home.prun("start", "sh -c 'sleep 1.5; echo finished'", "--name", "once", "--no-autorestart")
    row = row_when(home, "once", "stopped")
    assert "finished" in out_log(home, "once") and row["restarts"] == 0


def test_a_stop_exit_code_stops_a_fork_app(home: Home) -> None:
    home.prun("start", "sh -c 'sleep 1.5; exit 3'", "--name", "three", "--stop-exit-codes", "3")
    row = row_when(home, "three", "stopped")
    assert "one of --stop-exit-codes" in str(row["error"]) and row["restarts"] == 0


def test_shell_syntax_runs_through_a_shell(home: Home) -> None:
    home.prun("start", "echo ok; sleep 30", "--name", "shelled")
    assert home.app("shelled")["status"] == "online"
    wait_until(lambda: "ok\n" in out_log(home, "shelled"), what="the shell's echo")


def test_stop_sends_sigint_so_a_python_scripts_cleanup_runs(home: Home) -> None:
    home.prun("start", "cleanup.py", "--name", "tidy")
    wait_until(lambda: "cleanup started" in out_log(home, "tidy"), what="the script to run")
    home.prun("stop", "tidy")
    wait_until(lambda: "cleanup done" in out_log(home, "tidy"), what="its finally block")


def test_kill_signal_sigterm_skips_the_cleanup(home: Home) -> None:
    home.prun("start", "cleanup.py", "--name", "blunt", "--kill-signal", "SIGTERM")
    wait_until(lambda: "cleanup started" in out_log(home, "blunt"), what="the script to run")
    home.prun("stop", "blunt")
    assert "cleanup done" not in out_log(home, "blunt")


def test_an_interpreter_runs_a_script(home: Home) -> None:
    home.prun("start", "cleanup.py", "--name", "interp", "--interpreter", "python3 -u")
    wait_until(lambda: "cleanup started" in out_log(home, "interp"), what="the script under python3 -u")
    assert home.app("interp")["status"] == "online"


def test_every_worker_and_instance_knows_its_number(home: Home) -> None:
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "-i", "2", "--name", "api",
              "--instance-var", "NODE_APP_INSTANCE")
    port = home.port("api")
    seen = wait_until(lambda: (lambda s: len(s) == 2 and s)(
        {get(port, "/instance?NODE_APP_INSTANCE").strip() for _ in range(20)}), what="both workers")
    assert seen == {"0", "1"}
    home.prun("reload", "api")  # the same numbers for the same slots
    assert {get(port, "/instance?NODE_APP_INSTANCE").strip() for _ in range(40)} <= {"0", "1"}
    home.prun("start", "sh -c 'echo instance $PRUN_INSTANCE; sleep 30'", "--name", "numbered", "-i", "2")
    wait_until(lambda: "instance 0" in out_log(home, "numbered") and "instance 1" in out_log(home, "numbered"),
               what="both instances' numbers")


def test_a_bad_kill_signal_is_one_line(home: Home) -> None:
    result = home.prun("start", "sleep 10", "--kill-signal", "SIGNOPE", check=False, cwd=APPS)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--kill-signal" in result.stderr


def test_options_a_fork_app_cannot_use_are_refused_in_one_line(home: Home) -> None:
    result = home.prun("start", "sleep 10", "-b", "127.0.0.1:0", "--threads", "3", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--bind, --threads: not an option of a fork-mode app" in result.stderr
    assert "sleep" not in {row["name"] for row in home.ls()}


def test_no_merge_logs_gives_each_fork_instance_its_own_log(home: Home) -> None:
    home.prun("start", "sh -c 'echo instance $PRUN_INSTANCE; sleep 30'", "--name", "split", "-i", "2",
              "--no-merge-logs")
    def has(number: str) -> bool:
        path = Path(home.path, "logs", f"split-out-{number}.log")
        return path.exists() and f"instance {number}\n" in path.read_text()

    wait_until(lambda: has("0") and has("1"), what="split-out-0.log and split-out-1.log")


def test_no_autorestart_fork_instances_that_end_leave_the_others_running(home: Home) -> None:
    script = "if [ $PRUN_INSTANCE = 0 ]; then sleep 1; exit 0; fi; sleep 100"
    home.prun("start", f"sh -c '{script}'", "--name", "pair", "-i", "2", "--no-autorestart", "--min-uptime", "200")
    row = wait_until(lambda: (lambda r: r["workers"] == 1 and r)(home.app("pair")), what="instance 0 to end")
    assert (row["status"], row["restarts"]) == ("online", 0)
    assert "worker 0 exited with code 0 (--no-autorestart)" in str(row["error"])
    home.prun("scale", "pair", "2")  # the finished one runs again
    assert home.app("pair")["workers"] == 2
    wait_until(lambda: home.app("pair")["workers"] == 1, what="instance 0 to end again")


def test_no_autorestart_an_instance_that_ends_at_once_does_not_hold_the_start(home: Home) -> None:
    script = "[ $PRUN_INSTANCE = 0 ] && exit 0; sleep 100"  # instance 0 is done at once, instance 1 serves
    home.prun("start", f"sh -c '{script}'", "--name", "quick", "-i", "2", "--no-autorestart", "--min-uptime", "300",
              timeout=60)
    row = home.app("quick")
    assert (row["status"], row["workers"]) == ("online", 1)


def test_no_autorestart_a_job_that_is_done_at_once_is_a_start_that_worked(home: Home) -> None:
    result = home.prun("start", "sh -c 'echo migrated'", "--name", "migrate", "--no-autorestart")  # exit code 0
    assert "migrate" in result.stdout and result.stderr == ""
    assert home.app("migrate")["status"] == "stopped"
    wait_until(lambda: "migrated" in out_log(home, "migrate"), what="its output")
    failed = home.prun("start", "sh -c 'exit 2'", "--name", "broken", "--no-autorestart", check=False)
    assert failed.returncode == 1 and "broken could not start" in failed.stderr  # a crash still is a failure
    assert home.app("broken")["status"] == "errored"
