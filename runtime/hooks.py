"""gunicorn's server hooks, as prun runs them: what a hook is given, and how a worker runs its two.

A gunicorn config file (`prun -c gunicorn.conf.py`) is Python, executed as gunicorn does. The master
runs on_starting, when_ready and on_exit (cluster/gunicorn.py). A worker is a fresh interpreter, not a
fork of the master, so it executes the file again itself, only if the file defines post_worker_init or
worker_exit, and runs those: post_worker_init once the app is loaded (and its lifespan started), before
the worker serves; worker_exit once it has drained, before it exits.

The objects a hook is given stand for gunicorn's Arbiter and Worker with the attributes hooks mostly
use: `pid`, `cfg` (the file's gunicorn settings as attributes), `log` (debug, info, warning, error,
critical, exception), and for a worker `ppid`, `slot`, `generation` and `wsgi` (the app it serves).
"""

from __future__ import annotations

import runpy
import sys
import traceback
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

MASTER_HOOKS = ("on_starting", "when_ready", "on_exit")
WORKER_HOOKS = ("post_worker_init", "worker_exit")


class HookLog:
    """What `server.log` and `worker.log` offer a hook: gunicorn's logger methods, as prun's lines."""

    def __init__(self, write: Callable[[str, str], None]) -> None:
        self.write = write  # (level, message)

    def _say(self, level: str, message: Any, args: tuple[Any, ...]) -> None:
        text = str(message) % args if args else str(message)
        self.write(level, text)

    def debug(self, message: Any, *args: Any) -> None:
        self._say("debug", message, args)

    def info(self, message: Any, *args: Any) -> None:
        self._say("info", message, args)

    def warning(self, message: Any, *args: Any) -> None:
        self._say("warning", message, args)

    def error(self, message: Any, *args: Any) -> None:
        self._say("error", message, args)

    def critical(self, message: Any, *args: Any) -> None:
        self._say("error", message, args)

    def exception(self, message: Any, *args: Any) -> None:
        self._say("error", (str(message) % args if args else str(message)) + "\n" + traceback.format_exc().rstrip(),
                  ())

    warn = warning


def execute(path: str) -> dict[str, Any]:
    """The names a gunicorn config file defines, once run (as gunicorn runs it: a module named __config__)."""
    return runpy.run_path(path, run_name="__config__")


def settings_of(names: Mapping[str, Any], known: Callable[[str], bool]) -> SimpleNamespace:
    """`cfg` for the hooks: the file's names that `known` says are gunicorn settings."""
    return SimpleNamespace(**{k: v for k, v in names.items() if known(k)})


LEVELS = ("debug", "info", "warning", "error")


def _stderr(least: str) -> Callable[[str, str], None]:
    """Writes a worker's hook lines as the master writes its own, from level `least` up."""
    def write(level: str, message: str) -> None:
        if LEVELS.index(level) >= LEVELS.index(least):
            print(f"prun: {message}" if level in ("info", "debug") else f"prun: {level}: {message}", file=sys.stderr,
                  flush=True)

    return write


class WorkerHooks:
    """A worker's post_worker_init and worker_exit, from the config file the master names at boot."""

    def __init__(self, path: str, pid: int, ppid: int, slot: int, generation: int, log_level: str = "info") -> None:
        names = execute(path)
        self.post_worker_init = names.get("post_worker_init")
        self.worker_exit = names.get("worker_exit")
        cfg = settings_of(names, lambda k: not k.startswith("_") and not callable(names[k]))
        self.log = HookLog(_stderr(log_level))
        self.worker = SimpleNamespace(pid=pid, ppid=ppid, slot=slot, generation=generation, age=generation,
                                      cfg=cfg, log=self.log, wsgi=None)
        self.server = SimpleNamespace(pid=ppid, cfg=cfg, log=self.log)

    def initialized(self, app: Any) -> None:
        """post_worker_init(worker), the app loaded; what it raises stops the worker's boot (the master says why)."""
        self.worker.wsgi = app
        if callable(self.post_worker_init):
            self.post_worker_init(self.worker)

    def exiting(self) -> None:
        """worker_exit(server, worker); what it raises is printed, and the worker exits all the same."""
        if not callable(self.worker_exit):
            return
        try:
            self.worker_exit(self.server, self.worker)
        except Exception:
            self.log.exception("the worker_exit hook failed")
