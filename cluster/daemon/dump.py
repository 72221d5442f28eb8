"""The dump: `prun save` writes every app's spec to $PRUN_HOME/dump.json, `prun resurrect` reads them back.

    {"version": 1, "apps": [{...a spec (the fields of schema.py)..., "stopped": false, "environ": {...}}, ...]}

It is 0600 (in a 0700 home) and holds what `start` was given and, as PM2's, the environment each app was
started in (`environ`), so that `prun resurrect` at boot starts them as they were; `prun save --filter-env
PREFIX` leaves out the variables that start with PREFIX. A save writes it whole or not at all (a full disk
leaves the last dump as it was, and no temporary file behind) and keeps the dump it replaces as
dump.json.bak. A dump that cannot be used is refused with the reason, and kept; `read_or_backup` then
falls back to dump.json.bak.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from prun.cluster.daemon.home import write_private
from prun.cluster.daemon.jsonload import TooDeep, loads
from prun.cluster.daemon.spec import Spec
from prun.cluster.errors import PrunError

VERSION = 1
STOPPED = "stopped"  # beside each app's spec: it was stopped when saved (it comes back stopped)
ENVIRON = "environ"  # beside each app's spec: the environment it was started in (absent in older dumps)


@dataclass
class Saved:
    """One app of a dump."""

    spec: Spec
    stopped: bool
    environ: dict[str, str] | None = None  # None: an older dump, without it


def filtered(environ: dict[str, str], prefixes: list[str]) -> dict[str, str]:
    """`environ` without the variables whose names start with one of `prefixes`."""
    return {k: v for k, v in environ.items() if not any(k.startswith(p) for p in prefixes if p)}


def write(path: str, apps: list[Saved]) -> None:
    """Save these apps to `path`; PrunError ("cannot write the dump PATH: No space left on device") if not."""
    data = {"version": VERSION, "apps": [dict(asdict(app.spec), **{STOPPED: app.stopped},
                                              **({ENVIRON: app.environ} if app.environ is not None else {}))
                                         for app in apps]}
    try:
        write_private(path, data, durable=True, backup=f"{path}.bak")
    except OSError as exc:
        raise PrunError(f"cannot write the dump {path}: {exc.strerror or exc}") from None


def read(path: str) -> list[Saved]:
    """The apps of the dump at `path`, every spec checked; PrunError with the reason if it cannot be used."""
    kept = "it is kept as it is"
    try:
        with open(path, "rb") as fh:
            data = loads(fh.read())
    except FileNotFoundError:
        raise PrunError(f"no dump to resurrect: {path} does not exist (run prun save first)") from None
    except TooDeep as exc:
        raise PrunError(f"refusing the dump {path}: it is {exc}; {kept}") from None
    except ValueError as exc:
        raise PrunError(f"refusing the dump {path}: it is not valid JSON ({exc}); {kept}") from None
    except OSError as exc:
        raise PrunError(f"cannot read the dump {path}: {exc.strerror}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("apps"), list):
        raise PrunError(f"refusing the dump {path}: not a prun dump of version {VERSION}; {kept}")
    saved = []
    for app in data["apps"]:
        stopped = app.get(STOPPED, False) if isinstance(app, dict) else False
        environ = app.get(ENVIRON) if isinstance(app, dict) else None
        try:
            if not isinstance(stopped, bool):
                raise PrunError(f"refusing the dump {path}: {STOPPED} must be true or false")
            if environ is not None and not (isinstance(environ, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in environ.items())):
                raise PrunError(f"refusing the dump {path}: {ENVIRON} must be an object of strings")
            spec = Spec.parse({k: v for k, v in app.items() if k not in (STOPPED, ENVIRON)}
                              if isinstance(app, dict) else app, f"refusing the dump {path}")
        except PrunError as exc:
            raise PrunError(f"{exc}; {kept}") from None
        saved.append(Saved(spec, stopped, environ))
    return saved


def read_or_backup(path: str) -> tuple[list[Saved], str]:
    """The apps of the dump, or of its backup if the dump cannot be used: (apps, why the backup was used or '')."""
    try:
        return read(path), ""
    except PrunError as exc:
        if not os.path.exists(f"{path}.bak"):
            raise
        try:
            return read(f"{path}.bak"), f"{exc}; resurrecting the backup {path}.bak instead"
        except PrunError:
            raise exc from None
