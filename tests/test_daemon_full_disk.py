"""$PRUN_HOME on a full disk: `prun save` fails in one line and keeps the last dump; app records that cannot
be written cost a line in the daemon's log, not the stop or restart that wrote them; the daemon answers on.

PRUN_HOME is a small tmpfs of its own (root only), filled with a file once the apps run. The apps' own logs
go to another disk: the daemon learns that a master is online from the master's lines in its err log, so
with that log on the full disk too a start would wait for a line that cannot be written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator

import pytest

from prun.cluster.daemon.home import write_private
from tests.daemon_support import Home, get
from tests.support import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


def _mount(path: str, size: str) -> None:
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")


@pytest.fixture
def small_home() -> Iterator[Home]:
    """A Home whose PRUN_HOME is a 2 MB tmpfs; its processes ended and the tmpfs unmounted whatever happens."""
    home = Home()
    os.mkdir(home.path, 0o700)
    try:
        _mount(home.path, "2m")
        try:
            yield home
        finally:
            try:
                home.cleanup()
            finally:
                subprocess.run(["umount", "-l", home.path])
    finally:
        shutil.rmtree(home.root, ignore_errors=True)


def fill(home: Home) -> str:
    """Fill PRUN_HOME's disk to the last byte, the daemon's log included; the file that fills it."""
    with open(os.path.join(home.path, "daemon.log"), "a") as log:  # its last page full: its next line needs a new one
        page = os.statvfs(home.path).f_bsize
        log.write("#" * (page - log.tell() % page - 1) + "\n")
    filler = os.path.join(home.path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def start(home: Home, name: str, *args: str) -> None:
    logs = os.path.join(home.root, "logs")
    home.prun("start", *args, "--name", name, "--log-file", os.path.join(logs, f"{name}.out"),
              "--error-file", os.path.join(logs, f"{name}.err"))


def test_save_on_a_full_disk_fails_in_one_line_and_the_last_dump_stays(small_home: Home) -> None:
    home = small_home
    start(home, "api", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0")
    start(home, "napper", "sleep 1000")
    home.prun("save")
    dump = os.path.join(home.path, "dump.json")
    saved = open(dump).read()
    filler = fill(home)
    home.prun("stop", "napper")  # a dump now would differ
    result = home.prun("save", check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"prun: error: cannot write the dump {dump}: No space left on device\n"
    assert open(dump).read() == saved
    assert sorted(n for n in os.listdir(home.path) if n.startswith("dump")) == ["dump.json"]  # no .tmp, no .bak
    assert {row["name"]: row["status"] for row in home.ls()} == {"api": "online", "napper": "stopped"}
    # resurrect on the full disk: what the last dump holds comes back (its records cannot be written)
    home.prun("delete", "api")
    home.prun("resurrect")
    assert {row["name"]: row["status"] for row in home.ls()} == {"napper": "stopped", "api": "online"}
    assert get(home.port("api")).startswith("hello")
    os.unlink(filler)  # room again: the next save keeps the last dump as dump.json.bak
    home.prun("save")
    assert open(dump + ".bak").read() == saved
    assert json.loads(open(dump).read())["apps"][0]["stopped"] is True  # napper, id 1 now the first
    for path in (dump, dump + ".bak"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "cannot write its record" in open(os.path.join(home.path, "daemon.log")).read()


def test_stop_restart_and_reload_complete_when_app_records_cannot_be_written(small_home: Home) -> None:
    home = small_home
    start(home, "api", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "-i", "2")
    start(home, "napper", "sleep 1000")
    record = os.path.join(home.path, "apps", "0.json")
    filler = fill(home)
    home.prun("stop", "api")
    assert home.app("api")["status"] == "stopped"
    home.prun("restart", "api")
    api = home.app("api")
    assert (api["status"], api["workers"]) == ("online", 2)
    assert get(home.port("api")).startswith("hello")
    home.prun("reload", "api")
    assert get(home.port("api")).startswith("hello")
    home.prun("restart", "napper")
    assert home.app("napper")["status"] == "online"
    assert json.loads(open(record).read())["status"] == "online"  # the record as it was before the disk filled
    os.unlink(filler)
    home.prun("stop", "api")  # its lines, held while the disk was full, are written with this one's
    log = os.path.join(home.path, "daemon.log")
    wait_until(lambda: "api: stopped" in open(log).read().rsplit("#\n", 1)[1], what="the daemon's log to resume")
    text = open(log).read().rsplit("#\n", 1)[1]
    assert f"api: cannot write its record {record}: No space left on device" in text
    assert "Traceback" not in text
    assert json.loads(open(record).read())["status"] == "stopped"  # written again


def test_write_private_leaves_no_temporary_file_when_the_disk_is_full(tmp_path: os.PathLike[str]) -> None:
    disk = os.path.join(str(tmp_path), "disk")
    os.mkdir(disk)
    _mount(disk, "64k")
    try:
        path = os.path.join(disk, "record.json")
        write_private(path, {"small": True})
        with pytest.raises(OSError) as failed:
            write_private(path, {"big": "x" * (1 << 20)}, durable=True, backup=path + ".bak")
        assert failed.value.errno == errno.ENOSPC
        assert os.listdir(disk) == ["record.json"] and json.load(open(path)) == {"small": True}
        with pytest.raises(TypeError):
            write_private(path, {"not": object()})
        assert os.listdir(disk) == ["record.json"]
        write_private(path, {"second": True}, backup=path + ".bak")
        assert json.load(open(path + ".bak")) == {"small": True}
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        subprocess.run(["umount", "-l", disk])
