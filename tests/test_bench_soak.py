"""The soak's pure helpers (benchmarks/soak.py): which failures a worker kill explains, growth beyond noise."""

from __future__ import annotations

from benchmarks.soak import growth, split_failures, stream_body

KILL = {"pid": 100, "at": 10.0, "dead": 10.1}


def fail(start: float, end: float, pid: int | None) -> dict:
    return {"start": start, "end": end, "pid": pid, "kind": "reset"}


def test_a_kill_explains_the_failures_of_its_worker_and_of_unknown_workers_in_its_window() -> None:
    explained = [
        fail(9.0, 10.05, None),   # in flight at the kill, worker unknown
        fail(10.3, 10.3, None),   # sent before the worker was seen dead + 0.25 s
        fail(9.0, 10.0, 100),     # on the killed worker's connection
        fail(12.0, 12.0, 100),    # on its connection, found later (a slow reader still had its bytes)
    ]
    not_explained = [
        fail(9.0, 9.9, None),     # over before the kill
        fail(10.4, 10.5, None),   # sent after the window
        fail(9.0, 10.05, 200),    # in the window, but on another worker's connection
        fail(9.0, 9.99, 100),     # on the killed worker, but before the kill
    ]
    inside, outside = split_failures(explained + not_explained, [KILL])
    assert inside == explained
    assert outside == not_explained
    assert split_failures(explained, []) == ([], explained)


def test_growth_is_judged_against_the_spread_of_the_first_fifth() -> None:
    flat = [10.0, 12.0, 11.0] + [11.0] * 9 + [12.0, 10.0, 11.0]
    assert growth(flat)["beyond"] is False
    assert growth(flat)["noise"] == 2.0
    rising = [10.0, 10.5, 10.0] + [11.0] * 9 + [13.0, 13.0, 13.0]
    assert growth(rising)["growth"] == 3.0
    assert growth(rising)["beyond"] is True
    assert growth([10.0] * 6 + [10.5] * 6, floor=1.0)["beyond"] is False  # under the floor
    assert growth([10.0] * 5)["beyond"] is None  # too few samples to say


def test_the_streamed_body_the_client_expects_is_the_one_the_app_sends() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "apps"))
    try:
        import soak_app
    finally:
        sys.path.pop(0)
    size = 100_000
    sent = b"".join(soak_app.chunk_at(offset, min(soak_app.CHUNK, size - offset))
                    for offset in range(0, size, soak_app.CHUNK))
    assert sent == stream_body(size)
