"""Imports the user's MODULE:ATTR inside a worker and tells which interface serves it."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from prun.runtime.options import EXIT_BOOT_FAILURE, INTERFACES
from prun.runtime.server import BootError

__all__ = ["INTERFACES", "detect", "load", "resolve", "split_app"]


def split_app(spec: str) -> tuple[str, str]:
    """'pkg.mod:attr' -> ('pkg.mod', 'attr'); a bare 'mod' means 'mod:app'."""
    module, _, attr = spec.partition(":")
    return module, attr or "app"


def load(spec: str, chdir: str, factory: bool = False) -> Any:
    """Import the app from `chdir` (first on sys.path). prun's own modules must already be loaded."""
    directory = os.path.abspath(chdir)
    module_name, attr = split_app(spec)
    if module_name.split(".")[0] == "prun":
        raise BootError(f"the app module {module_name!r} has the name of prun's own package; rename it")
    os.chdir(directory)
    sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise BootError(f"cannot import {module_name!r}: no module named {exc.name!r} (looked in {directory})") from None
        raise BootError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise BootError(f"importing {module_name!r} called sys.exit({exc.code!r})", code or EXIT_BOOT_FAILURE) from exc
    except BaseException as exc:  # KeyboardInterrupt at import time is a failure too
        raise BootError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise BootError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise BootError(f"calling the factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    return app


def _positional_count(fn: Any) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return -1
    return sum(
        1 for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def detect(app: Any, interface: str) -> str:
    """The interface to serve `app` with: the explicit one, or a guess from its shape."""
    if interface != "auto":
        return interface
    if inspect.isclass(app) and issubclass(app, asyncio.BaseProtocol):
        return "protocol"
    if not callable(app):
        raise BootError(f"{type(app).__name__} object is not something prun can serve (not callable)")
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else app.__call__
    count = _positional_count(call)
    if inspect.iscoroutinefunction(call):
        if count == 3:
            return "asgi"
        if count == 2:
            return "stream"
    elif count == 2:
        return "wsgi"
    elif count == 0:
        return "protocol"
    raise BootError(
        f"cannot tell how to serve {getattr(app, '__name__', type(app).__name__)!r}; "
        "pass --interface asgi|wsgi|stream|protocol"
    )


def _is_plain_function_without_parameters(app: Any) -> bool:
    return inspect.isfunction(app) and not inspect.iscoroutinefunction(app) and _positional_count(app) == 0


def resolve(app: Any, interface: str, spec: str, warn: Callable[[str], None]) -> tuple[Any, str]:
    """What to serve and how: `detect`, except that a plain function without parameters is looked into.

    Such a function is a protocol factory or an app factory given without --factory (`create_app`).
    It is called once: a protocol it returns makes it a protocol factory (that probe protocol is
    dropped); a servable app it returns is served, with a warning; anything else stops the boot.
    """
    if interface != "auto" or not _is_plain_function_without_parameters(app):
        return app, detect(app, interface)
    try:
        made = app()
    except Exception as exc:
        raise BootError(f"{spec!r} takes no arguments, so prun called it to see what it makes, and it failed: "
                        f"{type(exc).__name__}: {exc} (pass --factory for an app factory, --interface protocol "
                        "for a protocol factory)") from exc
    if isinstance(made, asyncio.BaseProtocol):
        return app, "protocol"
    try:
        kind = detect(made, "auto")
    except BootError:
        raise BootError(f"{spec!r} takes no arguments and returned {type(made).__name__}, which is neither an app "
                        "nor an asyncio protocol (for an app factory, pass --factory)") from None
    warn(f"{spec!r} is an app factory: prun called it to get the app (pass --factory to say so)")
    return made, kind
