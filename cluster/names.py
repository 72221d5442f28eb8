"""App names: the one rule for them, checked wherever a name enters prun; and the shape of a MODULE:ATTR target.

A name is what `prun ls` shows and commands take, and it names the app's log files
($PRUN_HOME/logs/NAME-out.log): so it can never hold a path (`/`, a leading `.`, `..`), a control
character or a space. A name enters at `prun start --name` and `prun run --name`, in a `start` request,
a prun.toml, a `prun save` dump and an app record; each of them checks it here. Namespaces follow the
same rule. A target of that shape is served by a master (cluster mode); any other is a command or
script (fork mode). This module imports only the standard library: the client checks names before it
sends them.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
RULE = f"1 to {MAX_LENGTH} letters, digits or . _ - @ + (not starting with '.', no '..')"
_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*")  # ASCII only: [A-Za-z] is not \w
_OTHER = re.compile(r"[^A-Za-z0-9._@+-]+")
TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # MODULE:ATTR


def shown(name: str) -> str:
    """A name as a message quotes it: repr (a control character stays visible), cut if long."""
    return repr(name[:40]) + ("..." if len(name) > 40 else "")


def check(name: str) -> str:
    """`name`, or ValueError saying what a name may be."""
    if len(name) > MAX_LENGTH or ".." in name or not _NAME.fullmatch(name):
        raise ValueError(f"a name is {RULE}")
    return name


def derived(word: str) -> str:
    """A valid name made from `word` (a module, a script's file name): other characters become '-'."""
    name = re.sub(r"\.{2,}", ".", _OTHER.sub("-", word)).lstrip(".")[:MAX_LENGTH]
    return name or "app"
