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


def aligned(a_runs: list[dict], b_runs: list[dict], key: str) -> tuple[list[float], list[float]]:
    """The figures `key` of two servers' runs in the rounds both have (each run names its `round`), in
    round order: a round one of them failed is left out of both, so ratios pair the same rounds."""
    a = {r["round"]: r[key] for r in a_runs if r.get(key) is not None}
    b = {r["round"]: r[key] for r in b_runs if r.get(key) is not None}
    common = sorted(set(a) & set(b))
    return [a[i] for i in common], [b[i] for i in common]


def compare(runs: dict[str, list[dict]], key: str, base: str | None, cpu_key: str | None = None) -> dict:
    """Servers measured in the same rounds, their runs by name (dicts with `round`, `key` and `cpu_key`):

    - `spread`: min/median/max of `key` per server, and `cpu_spread` of `cpu_key` (the server's CPU time
      per operation) when given;
    - `ratios`: `base` / peer of `key`, round by round; `cpu_ratios`: the peer's CPU per operation over
      `base`'s (above 1, `base` spends less);
    - `notes`: the spread notes of the `base` / peer claims."""
    out: dict = {"spread": {n: spread([r[key] for r in rs if r.get(key) is not None]) for n, rs in runs.items()},
                 "ratios": {}, "notes": []}
    if cpu_key:
        out["cpu_spread"] = {n: spread([r[cpu_key] for r in rs if r.get(cpu_key)]) for n, rs in runs.items()}
        out["cpu_ratios"] = {}
    if base is None or not runs.get(base):
        return out
    for name, rs in runs.items():
        if name == base:
            continue
        a, b = aligned(runs[base], rs, key)
        if not a:
            continue
        out["ratios"][name] = ratio_spread(a, b)
        note = spread_note(base, a, name, b)
        if note:
            out["notes"].append(note)
        if cpu_key:
            ca, cb = aligned(runs[base], rs, cpu_key)
            if ca:
                out["cpu_ratios"][name] = ratio_spread(cb, ca)
    return out


CLIENT_LIMIT_PCT = 90.0  # the load client's CPU use (percent of the CPUs it may use) above which it is the limit


def client_limit_note(name: str, pcts: list[float], capacity_pct: float = 100.0,
                      client: str = "the client") -> str | None:
    """A note when the load client used nearly all the CPU it had (`capacity_pct`: 100 per CPU it may use)
    while loading `name`: the figure is then the client's ceiling, not the server's."""
    if not pcts:
        return None
    top = statistics.median(pcts)
    if top < CLIENT_LIMIT_PCT / 100 * capacity_pct:
        return None
    return (f"{name}: {client} used {top:.0f}% of the {capacity_pct:.0f}% CPU it had (median of the rounds): "
            f"the figure is {client}'s ceiling, not {name}'s")
