"""The app table every command prints after acting, drawn as PM2 draws it."""

from __future__ import annotations

from typing import Any

COLUMNS = ("id", "name", "namespace", "mode", "pid", "uptime", "↺", "status", "cpu", "mem", "workers")


def uptime(seconds: float) -> str:
    """With its unit always: 0s (a stopped app), 42s, 5m, 3h, 2D (PM2's units)."""
    for size, unit in ((86400, "D"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def memory(size: int) -> str:
    for unit, scale in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}b"


def cells(row: dict[str, Any]) -> list[str]:
    return [str(row["id"]), row["name"], row["namespace"], row["mode"], str(row["pid"] or "0"),
            uptime(row["uptime"]), str(row["restarts"]), row["status"], f"{row['cpu']:g}%", memory(row["memory"]),
            str(row["workers"])]


def render(rows: list[dict[str, Any]]) -> str:
    body = [cells(row) for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in body)]) for i, c in enumerate(COLUMNS)]

    def line(left: str, mid: str, right: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + right

    def row(values: list[str] | tuple[str, ...]) -> str:
        return "│" + "│".join(f" {v:<{w}} " for v, w in zip(values, widths)) + "│"

    out = [line("┌", "┬", "┐"), row(COLUMNS), line("├", "┼", "┤")]
    out += [row(r) for r in body]
    out.append(line("└", "┴", "┘"))
    return "\n".join(out)
