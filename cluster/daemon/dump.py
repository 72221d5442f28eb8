"""The dump: `prun save` writes every app's spec to $PRUN_HOME/dump.json, `prun resurrect` reads them back.

    {"version": 1, "apps": [{...a spec (the fields of schema.py)..., "stopped": false}, ...]}

It is 0600 and holds only what `start` was given, never the caller's environment. A save writes it
whole or not at all (a full disk leaves the last dump as it was, and no temporary file behind) and keeps
the dump it replaces as dump.json.bak. A dump that cannot be used is refused with the reason, and kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prun.cluster.daemon.home import write_private
from prun.cluster.daemon.jsonload import TooDeep, loads
from prun.cluster.daemon.spec import Spec
from prun.cluster.errors import PrunError

VERSION = 1
STOPPED = "stopped"  # beside each app's spec: it was stopped when saved (it comes back stopped)


@dataclass
class Saved:
    """One app of a dump."""

    spec: Spec
    stopped: bool


def write(path: str, apps: list[Saved]) -> None:
    """Save these apps to `path`; PrunError ("cannot write the dump PATH: No space left on device") if not."""
    data = {"version": VERSION, "apps": [dict(asdict(app.spec), **{STOPPED: app.stopped}) for app in apps]}
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
        try:
            if not isinstance(stopped, bool):
                raise PrunError(f"refusing the dump {path}: {STOPPED} must be true or false")
            spec = Spec.parse({k: v for k, v in app.items() if k != STOPPED} if isinstance(app, dict) else app,
                              f"refusing the dump {path}")
        except PrunError as exc:
            raise PrunError(f"{exc}; {kept}") from None
        saved.append(Saved(spec, stopped))
    return saved
