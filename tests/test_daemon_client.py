"""The Python client API (what the CLI itself uses) and the event stream, `prun events` included."""

from __future__ import annotations

import os
import subprocess

import pytest

from prun.cluster.client import Client, ClientError
from tests.daemon_support import Events, Home, get
from tests.support import APPS, prun_command, wait_until


def test_the_client_api_drives_the_workflow(home: Home) -> None:
    client = Client(home.path)
    assert client.ping()["pong"] is True
    rows = client.start("greeter:app", name="api", instances=2, env={"GREETING": "api"}, cwd=str(APPS),
                        bind=["127.0.0.1:0"], lifespan="off")
    row = next(r for r in rows if r["name"] == "api")
    assert (row["status"], row["workers"]) == ("online", 2)
    port = int(row["listen"][0].rsplit(":", 1)[1])
    assert get(port).startswith("api ")
    assert client.env("api")["GREETING"] == "api"
    assert client.reload("api")[0]["restarts"] == 1
    assert client.scale("api", "+1")[0]["workers"] == 3
    assert get(port).startswith("changed ") is False
    assert client.restart("api", env={"GREETING": "changed"})[0]["restarts"] == 2
    assert get(port).startswith("changed ")
    assert client.describe(0)[0]["spec"]["instances"] == "3"
    with pytest.raises(ClientError) as refused:
        client.stop("ghost")
    assert refused.value.code_name == "NO_SUCH_APP" and refused.value.code == 1
    with pytest.raises(ClientError) as exists:
        client.start("greeter:app", name="api", cwd=str(APPS), bind=["127.0.0.1:0"])
    assert exists.value.code_name == "ALREADY_RUNNING"
    assert client.stop("api")[0]["status"] == "stopped"
    assert client.delete("all") == []
    assert client.save() == {"path": f"{home.path}/dump.json", "apps": 0}
    client.kill()
    assert not client.running() and not home.ours()


def test_events_are_published_for_each_step(home: Home) -> None:
    client = Client(home.path)
    client.ping()
    events = Events(client)
    client.start("greeter:app", name="api", cwd=str(APPS), bind=["127.0.0.1:0"], lifespan="off")
    assert events.wait("api", "online")["workers"] == 1
    client.reload("api")
    events.wait("api", "reload_finished")
    client.scale("api", 2)
    assert events.wait("api", "scaled")["workers"] == 2
    client.stop("api")
    exited = events.wait("api", "exited")
    assert exited["code"] == 0 and exited["expected"] is True
    events.wait("api", "stopped")
    kinds = events.kinds("api")
    assert [k for k in kinds if not k.startswith("worker_")] == [
        "started", "online", "reload_started", "reload_finished", "scaled", "stopping", "exited", "stopped"]
    # each worker's start and end, from the master's control channel: one at boot, one for the reload, one more
    # for the scale; the reload's old worker and both at the stop exited, none of them restarting
    assert kinds.count("worker_started") == 3 and kinds.count("worker_exited") == 3, kinds
    exits = [e for e in events.events if e.get("app") == "api" and e["event"] == "worker_exited"]
    assert all(e["restarting"] is False and e["pid"] > 0 for e in exits), exits


def test_prun_events_prints_them_live(home: Home) -> None:
    home.prun("ping")
    proc = subprocess.Popen(prun_command() + ["events"], env=home.env, stdout=subprocess.PIPE, text=True)
    try:
        log = os.path.join(home.path, "daemon.log")
        wait_until(lambda: "subscriber 1 connected" in open(log).read(), what="prun events to subscribe")
        home.prun("start", "sleep 1000", "--name", "napper")
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert " napper started pid=" in lines[0] and " napper worker_started slot=0 pid=" in lines[1]
        assert " napper online " in lines[2] and "workers=1" in lines[2]
    finally:
        proc.kill()
        proc.wait()



def test_a_worker_over_max_memory_restart_is_replaced_with_an_event(home: Home) -> None:
    client = Client(home.path)
    client.ping()
    events = Events(client)
    rows = client.start("greeter:app", name="fat", cwd=str(APPS), bind=["127.0.0.1:0"], lifespan="off",
                        max_memory_restart="1K")  # every worker is over it
    port = int(rows[0]["listen"][0].rsplit(":", 1)[1])
    hit = events.wait("fat", "memory_limit")
    assert hit["limit"] == 1024 and hit["memory"] > 1024 and hit["pid"] != rows[0]["pid"]
    assert hit["worker"] == "worker 0"
    assert get(port).startswith("hello ")
    assert "--max-memory-restart" in client.describe("fat")[0]["spec"]["run_args"]
    with pytest.raises(Exception, match="invalid --max-memory-restart 'lots'"):
        client.start("greeter:app", name="bad", cwd=str(APPS), bind=["127.0.0.1:0"], max_memory_restart="lots")

