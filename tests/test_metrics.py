"""GET /metrics on the health port: Prometheus text, parsed with prometheus_client's own parser."""

from __future__ import annotations

import os
import signal
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_support import Home, get
from tests.support import wait_until


def scrape(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """`name`'s samples (the sample name as the parser gives it), by their labels."""
    found = {}
    for family in families.values():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_count_requests_restarts_reloads_and_show_memory_and_cpu(prun):
    master = prun("greeter:app", "--lifespan", "off", "-i", "2", "-b", "127.0.0.1:0", "--health", "127.0.0.1:0",
                  "--name", "api")
    health = int(master.wait_for(r"health endpoint on http://127\.0\.0\.1:(\d+)/readyz").group(1))
    port = master.wait_ready()
    for _ in range(37):
        get(port)

    def served() -> float:
        return sum(samples(scrape(health), "prun_requests_total").values())

    wait_until(lambda: served() == 37, what="37 requests counted (heartbeats come every second)")
    families = scrape(health)
    requests = samples(families, "prun_requests_total")
    assert {dict(k)["worker"] for k in requests} == {"0", "1"} and {dict(k)["app"] for k in requests} == {"api"}
    memory = samples(families, "prun_worker_resident_memory_bytes")
    assert len(memory) == 2 and all(v > 5_000_000 for v in memory.values())
    assert len(samples(families, "prun_worker_cpu_seconds_total")) == 2
    assert sum(samples(families, "prun_open_connections").values()) == 0
    assert samples(families, "prun_workers")[(("app", "api"), ("state", "ready"))] == 2
    assert "prun_leastconn_queued_connections" in families

    master.reload()
    victim = next(iter(master.workers()))
    os.kill(victim, signal.SIGKILL)
    master.wait_for(rf"pid {victim}.*restarting it")
    families = scrape(health)
    assert samples(families, "prun_reloads_total")[(("app", "api"), ("result", "ok"))] == 1
    assert samples(families, "prun_reload_duration_seconds_count") == {(("app", "api"),): 1}
    assert 0 < samples(families, "prun_reload_duration_seconds_sum")[(("app", "api"),)] < 60
    crashes = {dict(k)["worker"]: v for k, v in samples(families, "prun_worker_restarts_total").items()
               if dict(k)["cause"] == "crash"}
    assert sum(crashes.values()) == 1
    assert served() == 37  # the requests of replaced workers are kept
    assert samples(families, "prun_generation") == {(("app", "api"),): 2}


def test_metrics_under_the_daemon(home: Home) -> None:
    home.prun("start", "greeter:app", "--lifespan", "off", "-b", "127.0.0.1:0", "--health", "127.0.0.1:0",
              "--name", "api")
    err = os.path.join(home.path, "logs", "api-err.log")
    import re

    health = int(wait_until(lambda: re.search(r"health endpoint on http://127\.0\.0\.1:(\d+)/", open(err).read()),
                            what="the health port").group(1))
    port = home.port("api")
    for _ in range(5):
        get(port)
    wait_until(lambda: sum(samples(scrape(health), "prun_requests_total").values()) == 5, what="5 requests")
