"""Log files are never opened through another user's symlink or into another user's file (cluster/logopen.py):
the log writer (run as the daemon runs it), the foreground master's --log-file and `prun flush` refuse, in one
line, and leave the target as it was; this user's own symlink is followed."""

from __future__ import annotations

import errno
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from prun.cluster.logopen import LogFileRefused, open_log
from tests.daemon_support import Home
from tests.support import APPS, prun_command, wait_until

ROOT = os.geteuid() == 0
as_root = pytest.mark.skipif(not ROOT, reason="needs root, to own a file or a symlink as another user")
PRECIOUS = b"precious: not a log\n"


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def victim(tmp_path: Path) -> Path:
    """A file outside the logs directory that a planted link points to."""
    target = tmp_path / "victim"
    target.write_bytes(PRECIOUS)
    os.utime(target, (1_000_000_000, 1_000_000_000))
    return target


def untouched(target: Path) -> bool:
    return target.read_bytes() == PRECIOUS and target.stat().st_mtime == 1_000_000_000


def plant(link: Path, target: Path) -> Path:
    """A symlink at `link` to `target`, owned by nobody (as another user would plant it)."""
    link.symlink_to(target)
    os.lchown(link, nobody(), -1)
    return link


def logs_dir(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    return logs


def run_writer(out_path: Path, err_path: Path) -> subprocess.CompletedProcess[str]:
    """The log writer as runner.py starts it (two pipes, then the paths), fed one line on each pipe."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "prun.cluster.daemon.logwriter", str(out_r), str(err_r),
                                 str(out_path), str(err_path), "--name", "t"],
                                pass_fds=(out_r, err_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.close(out_r)
        os.close(err_r)
    try:
        for fd, line in ((out_w, b"an out line\n"), (err_w, b"an err line\n")):
            try:
                os.write(fd, line)
            except BrokenPipeError:  # it refused and exited already
                pass
    finally:
        os.close(out_w)
        os.close(err_w)
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


@as_root
def test_the_writer_does_not_follow_another_users_symlink(tmp_path):
    target, logs = victim(tmp_path), logs_dir(tmp_path)
    link = plant(logs / "app-out.log", target)
    result = run_writer(link, logs / "app-err.log")
    assert result.returncode == 1
    assert result.stderr == (f"prun: error: {link} is a symbolic link owned by nobody (uid {nobody()}): "
                             "not following it\n")
    assert untouched(target) and link.is_symlink()


@as_root
def test_the_writer_does_not_write_into_another_users_file(tmp_path):
    logs = logs_dir(tmp_path)
    theirs = logs / "app-err.log"
    theirs.write_bytes(PRECIOUS)
    os.utime(theirs, (1_000_000_000, 1_000_000_000))
    os.chown(theirs, nobody(), -1)
    result = run_writer(logs / "app-out.log", theirs)
    assert result.returncode == 1
    assert result.stderr == f"prun: error: {theirs} belongs to nobody (uid {nobody()}), not to root (uid 0): " \
                            "not writing into it\n"
    assert untouched(theirs)


def test_the_writer_follows_its_own_users_symlink(tmp_path):
    logs = logs_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere.log"
    (logs / "app-out.log").symlink_to(elsewhere)  # dangling: created through it
    result = run_writer(logs / "app-out.log", logs / "app-err.log")
    assert (result.returncode, result.stderr) == (0, "")
    assert elsewhere.read_text() == "an out line\n" and (logs / "app-err.log").read_text() == "an err line\n"


@as_root
def test_open_log_neither_creates_through_nor_truncates_another_users_files(tmp_path):
    logs = logs_dir(tmp_path)
    dangling = plant(logs / "new.log", tmp_path / "created")
    with pytest.raises(LogFileRefused):
        open_log(str(dangling))
    assert not (tmp_path / "created").exists()
    theirs = logs / "theirs.log"
    theirs.write_bytes(PRECIOUS)
    os.chown(theirs, nobody(), -1)
    with pytest.raises(LogFileRefused) as refused:
        open_log(str(theirs), os.O_WRONLY | os.O_TRUNC)
    assert theirs.read_bytes() == PRECIOUS and refused.value.errno == errno.EPERM


def test_open_log_takes_roots_dev_null_and_fails_on_a_fifo_nobody_reads(tmp_path):
    os.close(open_log("/dev/null"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(OSError) as failed:
        open_log(str(fifo))  # at once, rather than blocking the writer until someone reads
    assert failed.value.errno == errno.ENXIO


@as_root
def test_the_foreground_masters_log_file_is_refused_in_one_line(tmp_path):
    target, logs = victim(tmp_path), logs_dir(tmp_path)
    link = plant(logs / "prun.log", target)
    result = subprocess.run(prun_command() + ["tcp:handle", "-b", "127.0.0.1:0", "--log-file", str(link)],
                            cwd=APPS, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"prun: error: cannot open log file {link}: {link} is a symbolic link owned by nobody (uid {nobody()}): "
        "not following it"]
    assert untouched(target)


@as_root
def test_prun_flush_does_not_truncate_through_another_users_symlink(home: Home, tmp_path):
    target = victim(tmp_path)
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--name", "api")
    out = Path(home.path, "logs", "api-out.log")
    err = Path(home.path, "logs", "api-err.log")
    wait_until(lambda: err.stat().st_size > 0, what="the app's first lines")
    out.unlink()
    plant(out, target)
    result = home.prun("flush", "api", check=False)
    assert result.returncode == 1
    assert result.stderr == (f"prun: error: cannot flush {out}: {out} is a symbolic link owned by nobody "
                             f"(uid {nobody()}): not following it\n")
    assert f"flushed {err}" in result.stdout and err.stat().st_size == 0  # the others are flushed all the same
    assert untouched(target)
