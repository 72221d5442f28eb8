"""`prun -c gunicorn.conf.py`: the settings prun has are taken, the others named once with why, and the
server hooks run in the process gunicorn runs them in (cluster/gunicorn.py, runtime/hooks.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from prun.cluster.config import FileExtras, build
from prun.cluster.errors import UsageError
from prun.cluster.gunicorn import IGNORED, KNOWN, MAPPED
from tests.support import wait_until

HOOKED = '''
import os

bind = "127.0.0.1:0"
workers = 2
keepalive = 7
raw_env = ["GREETING=from-gunicorn"]
loglevel = "debug"
preload_app = True
worker_class = "uvicorn.workers.UvicornWorker"
statsd_host = "localhost:8125"
workerz = 3
MARKS = os.environ["MARKS"]


def mark(what, pid):
    with open(os.path.join(MARKS, f"{what}-{pid}"), "w") as fh:
        fh.write(str(os.getpid()))


def on_starting(server):
    mark("on_starting", server.pid)
    server.log.info("on_starting hook for %d workers", server.num_workers)


def when_ready(server):
    mark("when_ready", server.pid)


def on_exit(server):
    mark("on_exit", server.pid)


def post_worker_init(worker):
    mark("post_worker_init", worker.pid)
    worker.log.debug("post_worker_init in slot %d", worker.slot)


def worker_exit(server, worker):
    mark("worker_exit", worker.pid)


def pre_fork(server, worker):
    mark("pre_fork", worker.pid)
'''

APP = '''
import os


async def app(scope, receive, send):
    if scope["type"] == "http":
        body = os.environ.get("GREETING", "").encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
'''


def _marks(folder: Path, hook: str) -> dict[int, int]:
    """pid the hook was given -> pid of the process that ran it, for each marker `hook` left."""
    return {int(p.name.rsplit("-", 1)[1]): int(p.read_text() or 0) for p in folder.glob(f"{hook}-*")}


def test_hooks_run_in_the_master_and_the_workers_and_ignored_settings_are_named(prun, tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text(HOOKED)
    marks = tmp_path / "marks"
    marks.mkdir()
    master = prun("-c", "gunicorn.conf.py", "web:app", cwd=tmp_path, env={"MARKS": str(marks)})
    master.wait_ready()
    workers = set(master.workers())
    assert len(workers) == 2  # workers = 2
    assert _marks(marks, "on_starting") == {master.pid: master.pid}
    wait_until(lambda: _marks(marks, "when_ready") == {master.pid: master.pid}, what="when_ready, after the ready line")
    # each worker ran post_worker_init itself, before it was ready
    assert _marks(marks, "post_worker_init") == {pid: pid for pid in workers}
    assert "on_starting hook for 2 workers" in master.output
    assert "prun: post_worker_init in slot 0" in master.output and "post_worker_init in slot 1" in master.output
    assert "balance: " in master.output  # loglevel = "debug"
    ignored = [line for line in master.output.splitlines() if line.startswith("prun: warning: gunicorn.conf.py: ")]
    assert [line.split(": ")[3].split()[0] for line in ignored] == [
        "preload_app", "worker_class", "statsd_host", "workerz", "pre_fork"], ignored
    assert "preload_app ignored: each prun worker is a fresh interpreter" in ignored[0]
    assert "workerz is not a gunicorn setting (did you mean workers?)" in ignored[3]
    assert "pre_fork not run: each prun worker is a fresh interpreter" in ignored[4]
    assert not list(marks.glob("pre_fork-*")) and not list(marks.glob("on_exit-*"))

    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    assert _marks(marks, "worker_exit") == {pid: pid for pid in workers}  # in each worker, once drained
    assert _marks(marks, "on_exit") == {master.pid: master.pid}


def test_settings_map_onto_prun_options(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text('import multiprocessing\nbind = ["0.0.0.0", "unix:/tmp/x.sock"]\nworkers = 3\n'
                      'timeout = 40\ngraceful_timeout = 9\nkeepalive = 4\nbacklog = 64\nmax_requests = 100\n'
                      'max_requests_jitter = 10\nlimit_request_line = 2048\nforwarded_allow_ips = ["10.0.0.1", "::1"]\n'
                      'accesslog = "access.log"\nerrorlog = "-"\nloglevel = "critical"\npidfile = "p.pid"\n'
                      'raw_env = ["A=1", "B=x=y"]\nproc_name = "api"\ncert_reqs = 2\nwsgi_app = "web:app"\n'
                      'reload = True\nthreads = 4\nuser = None\n')
    extras = FileExtras()
    config_ = build({"config": str(config)}, {}, extras)
    assert config_.bind == ["0.0.0.0:8000", "unix:/tmp/x.sock"]  # gunicorn's HOST alone is port 8000
    assert (config_.instances, config_.timeout, config_.graceful_timeout, config_.keepalive_timeout) == (3, 40, 9, 4)
    assert (config_.backlog, config_.max_requests, config_.max_requests_jitter) == (64, 100, 10)
    assert (config_.limit_request_line, config_.forwarded_allow_ips) == (2048, "10.0.0.1,::1")
    assert (config_.access_log, config_.access_log_file, config_.log_file) == ("common", "access.log", "")
    assert (config_.log_level, config_.pid_file, config_.env) == ("error", "p.pid", {"A": "1", "B": "x=y"})
    assert (config_.name, config_.cert_reqs, config_.app, config_.watch, config_.threads) == (
        "api", "required", "web:app", ".", 4)
    assert extras.notes == []  # every setting there is one prun has; `multiprocessing` is no setting
    assert extras.hooks is not None and not extras.hooks.master and not extras.hooks.worker


def test_the_command_line_beats_the_gunicorn_file(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text('workers = 3\nbind = "127.0.0.1:9000"\n')
    built = build({"config": str(config), "app": "web:app", "instances": "2", "port": "9100"}, {})
    assert (built.instances, built.bind) == (2, ["127.0.0.1:9100"])


@pytest.mark.parametrize(("content", "message"), [
    ('user = "no-such-user-here"\n', "user = 'no-such-user-here' in "),
    ("user = 0\n" if os.geteuid() else "user = 65534\n", "prun does not switch users"),
    ('proxy_protocol = True\n', "prun does not read the PROXY protocol"),
    ('protocol = "uwsgi"\n', "prun speaks HTTP only"),
    ('workers = 1 / 0\n', "cannot run config file"),
])
def test_what_prun_cannot_honour_is_refused_in_one_sentence(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(content)
    with pytest.raises(UsageError, match=message):
        build({"config": str(config), "app": "web:app"}, {})


def test_a_failing_post_worker_init_stops_the_boot_with_its_traceback(prun, tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text('def post_worker_init(worker):\n    raise RuntimeError("no db")\n')
    master = prun("-c", "gunicorn.conf.py", "web:app", "-b", "127.0.0.1:0", cwd=tmp_path)
    assert master.wait_exit(20) == 3
    assert "could not boot: RuntimeError: no db" in master.output
    assert 'raise RuntimeError("no db")' in master.output


def test_every_gunicorn_setting_is_known_once() -> None:
    """Each of gunicorn's settings is mapped, ignored with a reason, or a hook prun runs: never two of these."""
    assert not set(MAPPED) & set(IGNORED)
    assert all(reason for reason in IGNORED.values())
    assert {"bind", "workers", "on_starting", "preload_app", "user", "proxy_protocol"} <= KNOWN


def test_on_starting_and_on_exit_run_when_the_bind_fails(prun, tmp_path: Path) -> None:
    """on_starting runs before the bind: a port in use still runs on_starting and on_exit, then exits 1."""
    import socket

    (tmp_path / "web.py").write_text(APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "gunicorn.conf.py").write_text(HOOKED.replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
        master = prun("-c", "gunicorn.conf.py", "web:app", cwd=tmp_path, env={"MARKS": str(marks)})
        assert master.wait_exit(20) == 1
    assert "address already in use" in master.output.lower()
    assert _marks(marks, "on_starting") == {master.pid: master.pid}
    assert _marks(marks, "on_exit") == {master.pid: master.pid}
    assert not list(marks.glob("when_ready-*"))


def test_a_failing_on_starting_stops_prun_before_it_binds(prun, tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text('def on_starting(server):\n    raise RuntimeError("vault locked")\n')
    master = prun("-c", "gunicorn.conf.py", "web:app", "-b", "127.0.0.1:0", cwd=tmp_path)
    assert master.wait_exit(20) == 1
    assert master.output.count("prun: error:") == 1, master.output
    assert "the on_starting hook in gunicorn.conf.py failed: RuntimeError: vault locked" in master.output
    assert 'raise RuntimeError("vault locked")' in master.output  # the hook's own traceback, once
    assert "listening on" not in master.output


def test_a_workers_hook_log_keeps_the_log_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prun.runtime.hooks import WorkerHooks

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("def worker_exit(server, worker):\n    pass\n")
    for level, shown in (("debug", ["d", "i", "w"]), ("info", ["i", "w"]), ("warning", ["w"]), ("error", [])):
        hooks = WorkerHooks(str(conf), 1, 2, 0, 1, level)
        hooks.log.debug("d")
        hooks.log.info("i")
        hooks.log.warning("w")
        lines = capsys.readouterr().err.splitlines()
        assert [line.rsplit(" ", 1)[-1] for line in lines] == shown, (level, lines)
