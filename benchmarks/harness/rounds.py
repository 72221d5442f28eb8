"""Rounds: every server of a comparison measured once per round, in the same order (A B C A B C ...), so
that a slow spell of a shared machine falls on all of them alike, and per-round ratios can be taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator


def interleave(names: Iterable[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, name) pairs: round 1 for every name in order, then round 2, ..."""
    order = list(names)
    for index in range(1, rounds + 1):
        for name in order:
            yield index, name


def measure(names: list[str], rounds: int, one: Callable[[str, int], float | None],
            log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Call `one(name, round)` for every (round, name) of `interleave`; the figures it returned, by name
    (None, a failed run, is left out: the spread then has fewer rounds, which the report shows)."""
    figures: dict[str, list[float]] = {name: [] for name in names}
    for index, name in interleave(names, rounds):
        value = one(name, index)
        if value is not None:
            figures[name].append(value)
            if log is not None:
                log(f"  round {index}/{rounds} {name:16} {value:12,.0f}")
    return figures
