"""`GET /metrics` on the health port: the master's view of its workers in Prometheus text format.

Generated with the official `prometheus_client` (the `prun-cluster[metrics]` extra), imported by the master on the
first scrape only: workers never load it, and a master nobody scrapes never pays for it. Every value is read
from what the master already knows (heartbeats, the worker table, the rollout) when the scrape comes; the
workers' CPU and memory come from /proc.

    prun_requests_total{app,worker}              counter  requests served by the slot's workers, all generations
    prun_open_connections{app,worker}            gauge    connections open in the slot's serving worker
    prun_worker_restarts_total{app,worker,cause} counter  crash, hung (no heartbeat), max_requests, memory
    prun_reloads_total{app,result}               counter  rolling reloads: ok, failed
    prun_reload_duration_seconds{app}            summary  how long the successful reloads took
    prun_worker_resident_memory_bytes{app,worker} gauge   RSS of the slot's serving worker
    prun_worker_cpu_seconds_total{app,worker}    counter  CPU time (user + system) of the slot's serving worker
    prun_leastconn_queued_connections{app}       gauge    accepted by the master, handed to a worker, not yet
                                                          taken by it (leastconn only)
    prun_workers{app,state}                      gauge    workers by state (booting, ready, draining)
    prun_generation{app}                         gauge    the generation that serves
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Tally:
    """What the master counts for the metrics beyond its live worker table."""

    retired_requests: Counter[int] = field(default_factory=Counter)  # by slot: requests of workers gone
    restarts: Counter[tuple[int, str]] = field(default_factory=Counter)  # by (slot, cause)
    reloads: Counter[str] = field(default_factory=Counter)  # ok, failed
    reload_seconds: float = 0.0  # the sum over successful reloads

    def worker_gone(self, slot: int, requests: int) -> None:
        self.retired_requests[slot] += requests

    def restarted(self, slot: int, cause: str) -> None:
        self.restarts[(slot, cause)] += 1

    def reloaded(self, ok: bool, seconds: float) -> None:
        self.reloads["ok" if ok else "failed"] += 1
        if ok:
            self.reload_seconds += seconds


def rss(pid: int) -> int:
    """Resident bytes of a process (0 if gone): /proc/PID/statm, cheaper than psutil on a heartbeat."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class WorkerView:
    slot: int
    pid: int
    state: str
    conns: int
    requests: int
    queued: int


def available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def render(app: str, generation: int, workers: list[WorkerView], tally: Tally) -> bytes:
    """The exposition text for one scrape."""
    from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
    from prometheus_client.exposition import generate_latest

    serving: dict[int, WorkerView] = {}
    for worker in workers:  # the slot's serving worker: ready first, the newest pid otherwise
        best = serving.get(worker.slot)
        if best is None or (worker.state == "ready") > (best.state == "ready"):
            serving[worker.slot] = worker
    slots = sorted(set(serving) | set(tally.retired_requests) | {slot for slot, _ in tally.restarts})

    def families() -> Iterator[Any]:
        requests = CounterMetricFamily("prun_requests", "Requests served, by slot, over all its workers.",
                                       labels=["app", "worker"])
        live = Counter[int]()
        for worker in workers:
            live[worker.slot] += worker.requests
        for slot in slots:
            requests.add_metric([app, str(slot)], tally.retired_requests[slot] + live[slot])
        yield requests
        conns = GaugeMetricFamily("prun_open_connections", "Open connections, by slot.", labels=["app", "worker"])
        memory = GaugeMetricFamily("prun_worker_resident_memory_bytes", "Resident memory of the slot's worker.",
                                   labels=["app", "worker"])
        cpu = CounterMetricFamily("prun_worker_cpu_seconds", "CPU time (user and system) of the slot's worker.",
                                  labels=["app", "worker"])
        for slot, worker in sorted(serving.items()):
            labels = [app, str(slot)]
            conns.add_metric(labels, sum(w.conns for w in workers if w.slot == slot))
            memory.add_metric(labels, rss(worker.pid))
            cpu.add_metric(labels, cpu_seconds(worker.pid))
        yield from (conns, memory, cpu)
        restarts = CounterMetricFamily("prun_worker_restarts", "Workers replaced, by slot and cause.",
                                       labels=["app", "worker", "cause"])
        for (slot, cause), count in sorted(tally.restarts.items()):
            restarts.add_metric([app, str(slot), cause], count)
        yield restarts
        reloads = CounterMetricFamily("prun_reloads", "Rolling reloads, by result.", labels=["app", "result"])
        for result in ("ok", "failed"):
            reloads.add_metric([app, result], tally.reloads[result])
        yield reloads
        duration = SummaryMetricFamily("prun_reload_duration_seconds", "How long the successful reloads took.",
                                       labels=["app"])
        duration.add_metric([app], count_value=tally.reloads["ok"], sum_value=tally.reload_seconds)
        yield duration
        queued = GaugeMetricFamily("prun_leastconn_queued_connections", "Connections the master accepted and "
                                   "handed to a worker that has not taken them yet (leastconn).", labels=["app"])
        queued.add_metric([app], sum(w.queued for w in workers))
        yield queued
        states = GaugeMetricFamily("prun_workers", "Workers, by state.", labels=["app", "state"])
        by_state = Counter(w.state for w in workers)
        for state in ("spawning", "booting", "ready", "draining"):
            states.add_metric([app, state], by_state[state])
        yield states
        gen = GaugeMetricFamily("prun_generation", "The generation of workers that serves.", labels=["app"])
        gen.add_metric([app], generation)
        yield gen

    class Collector:
        def collect(self) -> Iterator[Any]:
            return families()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    text: bytes = generate_latest(registry)
    return text

