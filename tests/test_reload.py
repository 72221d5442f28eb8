"""Rolling reloads: readiness-gated, lossless under load, rolled back when the new code cannot boot."""

from __future__ import annotations

import shutil
import signal

import pytest

from tests.support import APPS, EchoLoad, echo, wait_until


@pytest.mark.parametrize("balance", ["shared", "leastconn"])
def test_ten_hups_under_keepalive_load_replace_every_worker_and_lose_nothing(prun, balance):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0", "--graceful-timeout", "10", "--balance", balance)
    port = master.wait_ready()
    pids = wait_until(lambda: len(master.workers()) == 2 and set(master.workers()))
    with EchoLoad(port, clients=8, per_connection=50) as load:
        load.wait_requests(200)
        for n in range(2, 12):
            master.reload(rf"reload complete: 2 workers on gen {n}")
            new = wait_until(lambda: len(master.workers()) == 2 and set(master.workers()), what="2 workers")
            assert not new & pids, f"gen {n}: some worker was not replaced"
            assert all(t.endswith(f"gen {n}") for t in master.workers().values())
            pids = new
            load.wait_requests(50)
    assert master.proc.poll() is None  # the master pid never changed
    assert load.failed == 0, load.errors[:5]
    assert load.ok > 1000


def test_reload_onto_broken_code_keeps_the_old_workers_then_a_fixed_reload_completes(prun, tmp_path):
    app = tmp_path / "service.py"
    shutil.copy(APPS / "tcp.py", app)
    master = prun("service:handle", "-i", "2", "-b", "127.0.0.1:0", cwd=tmp_path)
    port = master.wait_ready()
    old = wait_until(lambda: len(master.workers()) == 2 and set(master.workers()))
    good_code = app.read_text()
    app.write_text(good_code + "\nraise ImportError('a half-deployed release')\n")
    with EchoLoad(port, clients=4, per_connection=20) as load:
        load.wait_requests(50)
        master.reload(r"reload failed: worker 0 \(pid \d+, gen 2\): importing 'service' failed: "
                      r"ImportError: a half-deployed release; every worker keeps serving gen 1")
        load.wait_requests(50)
        assert set(master.workers()) == old
        assert master.proc.poll() is None
        app.write_text(good_code)
        master.reload(r"reload complete: 2 workers on gen 3")
        load.wait_requests(50)
    assert load.failed == 0, load.errors[:5]
    assert not set(master.workers()) & old
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0


def test_a_hup_during_a_reload_is_queued_not_run_in_parallel(prun):
    master = prun("tcp:handle", "-i", "2", "-b", "127.0.0.1:0")
    port = master.wait_ready()
    mark = master.mark()
    master.signal(signal.SIGHUP)
    master.wait_for("reloading: gen 1 -> gen 2", start=mark)
    master.signal(signal.SIGHUP)
    master.wait_for(r"reload complete: 2 workers on gen 2", start=mark)
    master.wait_for(r"reload complete: 2 workers on gen 3", start=mark)
    lines = master.output.splitlines()[mark:]
    starts = [i for i, line in enumerate(lines) if "reloading:" in line]
    ends = [i for i, line in enumerate(lines) if "reload complete" in line]
    assert len(starts) == 2 and ends[0] < starts[1]  # the second began after the first ended
    assert echo(port) == b"ping\n"


def test_reload_batch_replaces_two_at_a_time(prun):
    master = prun("tcp:handle", "-i", "4", "-b", "127.0.0.1:0", "--reload-batch", "2")
    master.wait_ready()
    old = wait_until(lambda: len(master.workers()) == 4 and set(master.workers()))
    master.reload("reload complete: 4 workers on gen 2")
    assert not set(wait_until(lambda: len(master.workers()) == 4 and master.workers())) & old


def test_reload_rereads_the_config_file(prun, tmp_path):
    shutil.copy(APPS / "tcp.py", tmp_path / "tcp.py")
    config = tmp_path / "prun.toml"
    config.write_text('app = "tcp:handle"\ninstances = 1\nenv = { GREETING = "one" }\n')
    master = prun("--config", str(config), "-b", "127.0.0.1:0", cwd=tmp_path)
    master.wait_ready()
    config.write_text('app = "tcp:handle"\ninstances = 1\nbogus = 1\n')
    mark = master.mark()
    master.signal(signal.SIGHUP)
    master.wait_for(r"reload failed: unknown setting 'bogus' in .*prun.toml; every worker keeps serving gen 1",
                    start=mark)


def test_a_new_worker_not_ready_within_the_ready_timeout_is_killed_and_the_old_ones_keep_serving(prun, tmp_path):
    shutil.copy(APPS / "tcp.py", tmp_path / "tcp.py")
    (tmp_path / "service.py").write_text(
        "import os, time\nfrom tcp import handle\nif os.path.exists('slow'):\n    time.sleep(60)\n")
    config = tmp_path / "prun.toml"
    config.write_text('app = "service:handle"\ninstances = 2\n')
    master = prun("--config", str(config), "-b", "127.0.0.1:0", cwd=tmp_path)
    port = master.wait_ready()
    old = wait_until(lambda: len(master.workers()) == 2 and set(master.workers()))
    config.write_text('app = "service:handle"\ninstances = 2\nready_timeout = 1\n')  # the reload applies it
    (tmp_path / "slow").touch()
    match = master.reload(r"reload failed: worker 0 \(pid (\d+), gen 2\): not ready after 1s; "
                          r"every worker keeps serving gen 1")
    wait_until(lambda: int(match.group(1)) not in master.workers(), what="the late worker to be gone")
    assert set(master.workers()) == old
    assert echo(port) == b"ping\n"
