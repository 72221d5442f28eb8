"""`prun monit`: a live view of every app and its workers, refreshed in place (PM2's monit).

    ┌ apps ─ id, name, status, workers, cpu, memory, restarts ─────────── (↑/↓ or j/k select, q quits)
    ├ workers of the selected app ─ slot, pid, gen, state, cpu, memory, connections, requests, req/s, restarts
    └ its latest log lines

The apps come from the daemon (`describe all`: one RPC per refresh), each app's workers with them (the
daemon asks each master over its control channel); cpu and memory of each worker
from psutil; requests/s from two successive request counts. Drawn with rich (the `prun-cluster[monit]` extra),
which only this command imports.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from typing import Any

import click

from prun.cluster.commands import client
from prun.runtime import install_hint

REFRESH = 1.0


class Monitor:
    """What the screen shows, from one refresh to the next."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.client = client()
        self.selected = 0
        self.rows: list[dict[str, Any]] = []
        self.workers: list[dict[str, Any]] = []
        self.processes: dict[int, Any] = {}
        self.last: dict[int, tuple[float, int]] = {}  # pid -> (time, requests) of the previous refresh
        self.rates: dict[int, float] = {}

    def refresh(self) -> None:
        self.rows = self.client.describe("all")
        self.selected = min(self.selected, max(len(self.rows) - 1, 0))
        self.workers = []
        if not self.rows:
            return
        now = time.monotonic()
        for worker in self.rows[self.selected].get("worker_list", []):
            pid = int(worker["pid"])
            cpu, mem = self.usage(pid)
            seen = self.last.get(pid)
            if seen and now > seen[0]:
                self.rates[pid] = max(0.0, (worker["requests"] - seen[1]) / (now - seen[0]))
            self.last[pid] = (now, worker["requests"])
            self.workers.append(dict(worker, cpu=cpu, memory=mem, rate=self.rates.get(pid, 0.0)))

    def usage(self, pid: int) -> tuple[float, int]:
        try:
            proc = self.processes.get(pid) or self.processes.setdefault(pid, self.psutil.Process(pid))
            return proc.cpu_percent(None), proc.memory_info().rss
        except self.psutil.Error:
            return 0.0, 0

    def move(self, delta: int) -> None:
        if self.rows:
            self.selected = (self.selected + delta) % len(self.rows)
            self.last.clear()
            self.rates.clear()

    def render(self, width: int, height: int) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        from prun.cluster.commands.table import memory

        apps = Table(title=None, expand=True, box=None, pad_edge=False, header_style="bold")
        for column, justify in (("", "left"), ("id", "right"), ("app", "left"), ("status", "left"),
                                ("workers", "right"), ("cpu", "right"), ("mem", "right"), ("↺", "right")):
            apps.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for index, row in enumerate(self.rows):
            mark = ">" if index == self.selected else " "
            apps.add_row(mark, str(row["id"]), row["name"], row["status"], str(row["workers"]), f"{row['cpu']:g}%",
                         memory(row["memory"]), str(row["restarts"]),
                         style="reverse" if index == self.selected else None)
        workers = Table(expand=True, box=None, pad_edge=False, header_style="bold")
        for column in ("worker", "pid", "gen", "state", "cpu", "mem", "conns", "requests", "req/s", "↺"):
            workers.add_column(column, justify="left" if column in ("worker", "state") else "right", no_wrap=True)
        for worker in self.workers:
            workers.add_row(str(worker["slot"]), str(worker["pid"]), str(worker["generation"]), worker["state"],
                            f"{worker['cpu']:.0f}%", memory(worker["memory"]), str(worker["connections"]),
                            str(worker["requests"]), f"{worker['rate']:.1f}", str(worker.get("restarts", 0)))
        name = self.rows[self.selected]["name"] if self.rows else ""
        used = len(self.rows) + len(self.workers) + 6  # headers, titles and the key line
        logs = self.log_lines(max(height - used, 0), width)
        title = Text(f" prun monit · {len(self.rows)} app{'' if len(self.rows) == 1 else 's'}", style="bold")
        title.append("   ↑/↓ j/k: select · q: quit", style="dim")
        return Group(title, apps, Text(f" workers of {name}" if name else " no app", style="bold"), workers,
                     Text(f" latest lines of {name}", style="bold"), *[Text(line, no_wrap=True, overflow="crop")
                                                                      for line in logs])

    def log_lines(self, count: int, width: int) -> list[str]:
        from prun.cluster.commands.logs import tail

        if not self.rows or count <= 0:
            return []
        lines: list[str] = []
        for path in dict.fromkeys(self.rows[self.selected]["logs"]):
            shown, _ = tail(path, count * 4)
            lines += [line for line in shown if not _prun_line(line)]  # the app's own output, not prun's
        return [line[:width] for line in lines[-count:]]


def _prun_line(line: str) -> bool:
    """A line prun itself wrote into the app's err log (`prun: ...`, after a --time stamp if any)."""
    return "prun: " in line[:48] and not line.startswith(" ")


def read_key(timeout: float) -> str:
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return ""
    key = os.read(sys.stdin.fileno(), 8).decode("utf-8", "replace")
    return {"\x1b[A": "up", "\x1b[B": "down", "k": "up", "j": "down"}.get(key, key)


@click.command("monit")
def command() -> None:
    """A live view of apps and workers: cpu, memory, connections, requests/s, restarts, logs."""
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        raise click.ClickException(f"prun monit needs rich: {install_hint('monit')}") from None
    if not sys.stdin.isatty():
        raise click.ClickException("prun monit needs a terminal")
    monitor = Monitor()
    console = Console()
    saved = termios.tcgetattr(sys.stdin)
    try:
        tty.setcbreak(sys.stdin.fileno())
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                monitor.refresh()
                live.update(monitor.render(console.width, console.height), refresh=True)
                deadline = time.monotonic() + REFRESH
                while (left := deadline - time.monotonic()) > 0:
                    key = read_key(left)
                    if key in ("q", "Q", "\x03"):
                        return
                    if key in ("up", "down"):
                        monitor.move(-1 if key == "up" else 1)
                        break
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
