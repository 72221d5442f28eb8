"""The rows of `prun ls`: an app's state with the cpu and memory of its master and all its processes."""

from __future__ import annotations

import time
from typing import Any

import psutil

from prun.cluster.daemon.app import ONLINE, RELOADING, App
from prun.cluster.daemon.home import alive


class Stats:
    """Keeps one psutil.Process per pid, so that cpu_percent measures since the previous `ls`."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}

    def _process(self, pid: int) -> psutil.Process:
        proc = self.procs.get(pid)
        if proc is None or not proc.is_running():
            proc = self.procs[pid] = psutil.Process(pid)
            proc.cpu_percent(None)
        return proc

    def usage(self, pid: int) -> tuple[float, int]:
        """cpu % and resident bytes of pid and its descendants (workers)."""
        cpu, mem = 0.0, 0
        try:
            root = self._process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0, 0
        for child in tree:
            try:
                proc = self._process(child.pid)
                cpu += proc.cpu_percent(None)
                mem += proc.memory_info().rss
            except psutil.Error:
                continue
        return round(cpu, 1), mem

    def view(self, app: App) -> dict[str, Any]:
        running = alive(app.pid, app.pid_started)
        cpu, mem = self.usage(app.pid) if running else (0.0, 0)
        return {
            "id": app.id, "name": app.name, "namespace": app.spec.namespace, "mode": app.spec.mode,
            "pid": app.pid if running else None, "status": app.status, "restarts": app.restarts,
            "uptime": round(time.time() - app.online_since, 1) if app.status in (ONLINE, RELOADING) else 0,
            "cpu": cpu, "memory": mem, "workers": app.workers, "listen": app.listen,
            "target": app.spec.target, "error": app.last_error,
        }
