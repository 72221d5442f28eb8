"""Statistics the scenarios share: the spread of a figure over rounds, ratios between servers measured in
the same rounds, the note that says when a difference is smaller than the noise, latency percentiles.
"""

from __future__ import annotations

import statistics


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def spread(values: list[float]) -> dict[str, float | int | None]:
    """min, median and max of a figure over rounds, and its range relative to the median."""
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None, "range_pct": None}
    mid = statistics.median(values)
    return {
        "n": len(values),
        "min": min(values),
        "median": mid,
        "max": max(values),
        "range_pct": round((max(values) - min(values)) / mid * 100, 1) if mid else None,
    }


def paired_ratios(a: list[float], b: list[float]) -> list[float]:
    """a / b round by round (the two were measured in the same round, one after the other)."""
    return [x / y for x, y in zip(a, b) if y]


def ratio_spread(a: list[float], b: list[float]) -> dict[str, float | int | None]:
    """The ratio of the medians, and min/median/max of the ratios of the same rounds."""
    ratios = paired_ratios(a, b)
    ma, mb = median(a), median(b)
    out = spread(ratios)
    out["of_medians"] = round(ma / mb, 3) if ma and mb else None
    for key in ("min", "median", "max"):
        if out[key] is not None:
            out[key] = round(float(out[key]), 3)  # type: ignore[arg-type]
    return out


def spread_note(a_name: str, a: list[float], b_name: str, b: list[float]) -> str | None:
    """A note when the claim "a is x times b" is not shown by these rounds, or needs a caveat.

    The claim is the median of the per-round ratios (as the tables give it). It is *within noise* when the ratios of the same rounds fall on
    both sides of 1, or when their range is wider than the claimed difference (|ratio - 1|). Otherwise,
    when the figures themselves swung more than the difference (a machine whose speed drifted), the note
    says so and that the ratio held from round to round (interleaving pairs the rounds)."""
    if len(a) < 2 or len(b) < 2:
        return f"{a_name} / {b_name}: fewer than 2 rounds, so no spread: not a measured difference"
    ma, mb = statistics.median(a), statistics.median(b)
    ratios = paired_ratios(a, b)
    if not ma or not mb or not ratios:
        return None
    claim = statistics.median(ratios)
    diff = abs(claim - 1)
    low, high = min(ratios), max(ratios)
    if low < 1 < high or high - low > diff:
        why = "fall on both sides of 1" if low < 1 < high else f"spread wider ({high - low:.2f}) than the difference"
        return (f"{a_name} / {b_name} = {claim:.2f}x is within noise: the ratios of the same rounds run from "
                f"{low:.2f} to {high:.2f} ({why})")
    width = max((max(a) - min(a)) / ma, (max(b) - min(b)) / mb)
    if width > diff:
        return (f"{a_name} / {b_name} = {claim:.2f}x: the figures swung {width * 100:.0f}% over the rounds, more "
                f"than the difference ({diff * 100:.0f}%), but the ratio of each round held ({low:.2f}-{high:.2f})")
    return None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def latency_summary(latencies: list[float]) -> dict[str, float | int | None]:
    """Milliseconds: count, p50, p90, p99, max."""
    ms = [x * 1000 for x in latencies]
    return {
        "count": len(ms),
        "p50_ms": _round(percentile(ms, 50)),
        "p90_ms": _round(percentile(ms, 90)),
        "p99_ms": _round(percentile(ms, 99)),
        "max_ms": _round(max(ms) if ms else None),
    }


def split_by_windows(done_at: list[float], latency: list[float], windows: list[tuple[float, float]]
                     ) -> tuple[list[float], list[float]]:
    """Latencies of requests that ended inside any window, and of the others."""
    inside, outside = [], []
    ordered = sorted(windows)
    for stamp, lat in zip(done_at, latency):
        hit = any(a <= stamp <= b for a, b in ordered)
        (inside if hit else outside).append(lat)
    return inside, outside
