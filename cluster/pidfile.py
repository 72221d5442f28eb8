"""--pid-file: the pid of a master (or a fork-mode supervisor) in a file, removed at its exit if still its own."""

from __future__ import annotations

import os

from prun.cluster.errors import PrunError


def write(path: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise PrunError(f"cannot write pid file {path}: {exc.strerror}") from None


def remove(path: str) -> None:
    """Remove the file unless another process has written its own pid there since."""
    try:
        with open(path) as fh:
            if fh.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass
