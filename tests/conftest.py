from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon_support import Home
from tests.support import Prun


@pytest.fixture
def prun() -> Iterator[type[Prun]]:
    """Start prun masters with prun(*args, cwd=..., env=...); all are cleaned up after the test."""
    started: list[Prun] = []

    def start(*args: str, **kwargs: object) -> Prun:
        instance = Prun(*args, **kwargs)  # type: ignore[arg-type]
        started.append(instance)
        return instance

    yield start  # type: ignore[misc]
    for instance in started:
        instance.cleanup()


@pytest.fixture
def home() -> Iterator[Home]:
    """A temporary PRUN_HOME; afterwards `prun kill`, then SIGKILL of anything started under it."""
    instance = Home()
    try:
        yield instance
    finally:
        instance.cleanup()
