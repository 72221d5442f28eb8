"""The schema of an app's spec: every field declared once, with its JSON type, its default and its check.

As PM2's lib/API/schema.json declares its apps' options, each field of `Spec` (spec.py) is a row,
`name: type = declare(KIND, help, ...)`; where the field is an option of `prun run`, its default is that
option's in the one option table (cluster/options.py). A Spec is only ever made by `build`, whatever it
came from: a `start` request (which the client builds for `prun start` and for a prun.toml), a
`prun save` dump, an app record in $PRUN_HOME/apps/. What does not fit is refused in one sentence naming
where it came from, the app and the field:

    /home/me/.prun/dump.json: app 'web': graceful_timeout must be a number

Unknown fields are refused, except in app records, which another version of prun may have written
before a `prun update`: there they are ignored, with a line in the daemon's log. `max_memory` (bytes), a
field of older specs, is read as `--max-memory-restart` in run_args. PROTOCOL.md's table of the fields
is generated from the rows: `python -m prun.cluster.daemon.spec`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prun.cluster import names
from prun.cluster.errors import PrunError, UsageError

MODES = ("cluster", "fork")
# Fork mode's graceful_timeout is the seconds between TERM and KILL of an instance, PM2's kill_timeout: a
# command is not drained as a cluster worker is, and has no reason to be given 25 s to exit.
FORK_KILL_TIMEOUT = 5.0
# The options of `prun run` a spec carries as fields of its own, never among its run_args.
CARRIED = ("app", "bind", "host", "port", "instances", "name", "env", "autorestart")  # --host/--port: folded into bind
# The options the daemon's log writer reads, combined into the field log_time.
LOG_TIME_OPTIONS = ("time", "log_date_format")
MAX_BACKLOG = 65535  # as --backlog (cluster/options.py): the kernel caps it at net.core.somaxconn


class SpecError(UsageError):
    """A spec that does not fit the schema: one sentence naming its source, its app and the field."""


# ---- kinds: the JSON types a field may hold --------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A JSON type: how a message names it, how to tell it, and the Python value it becomes."""

    what: str  # "a number": the end of "graceful_timeout must be a number"
    test: Callable[[Any], bool]
    convert: Callable[[Any], Any]
    json: str  # its name in PROTOCOL.md


def _is_number(value: Any) -> bool:
    """A JSON number Python can compute with: finite, and no integer too large for a float or a C long."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 1 << 63
    return isinstance(value, float) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer() and abs(value) < 1 << 63


def _instances(value: Any) -> str:
    return value if isinstance(value, str) else str(int(value))


STRING = Kind("a string", lambda v: isinstance(v, str), str, "string")
NUMBER = Kind("a number", _is_number, float, "number")
INTEGER = Kind("a whole number", _is_integer, int, "integer")
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool), bool, "boolean")
STRINGS = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), list,
               "array of strings")
VARIABLES = Kind("an object of strings",
                 lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), dict,
                 "object of strings")
INSTANCES = Kind("a string or a whole number", lambda v: isinstance(v, str) or _is_integer(v), _instances, "string")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from value
    elif isinstance(value, dict):
        yield from value
        yield from value.values()


# ---- fields ----------------------------------------------------------------------------------------

REQUIRED: Any = object()  # a field every spec must give
SAME: Any = object()  # fork mode's default is cluster mode's


@dataclass(frozen=True)
class Field:
    """One field of a spec, as `declare` states it (its name is the Spec attribute's)."""

    name: str
    kind: Kind
    help: str
    default: Any = REQUIRED
    fork_default: Any = SAME  # where fork mode's default differs
    option: str = ""  # the `prun run` option it carries: the default is that option's (cluster/options.py)
    daemon: bool = False  # read by the daemon (its log writer) alone: never passed to the master as an argument
    option_parses: bool = True  # the option's parser checks the value too
    checks: tuple[Callable[[Any], Any], ...] = ()  # each raises ValueError saying what is wrong

    def default_for(self, mode: str) -> Any:
        """A fresh copy of the default in this mode; REQUIRED if there is none."""
        if mode == "fork" and self.fork_default is not SAME:
            return copy.deepcopy(self.fork_default)
        if self.option:
            from prun.cluster.options import BY_NAME

            return self.kind.convert(BY_NAME[self.option].default_value())
        return self.default if self.default is REQUIRED else copy.deepcopy(self.default)

    def read(self, value: Any) -> Any:
        """The field's value from JSON; ValueError with the sentence (after the app's name) if it does not fit."""
        if not self.kind.test(value):
            raise ValueError(f"{self.name} must be {self.kind.what}")
        if any("\0" in text for text in _strings(value)):
            raise ValueError(f"invalid {self.name}: it holds a NUL character")
        value = self.kind.convert(value)
        checks = self.checks
        if self.option and self.option_parses:
            from prun.cluster.options import BY_NAME

            checks = (BY_NAME[self.option].parse, *checks)
        for check in checks:
            try:
                check(value)
            except (ValueError, PrunError) as exc:
                raise ValueError(f"invalid {self.name}: {exc}") from None
        return value

    def default_text(self) -> str:
        """The default as PROTOCOL.md shows it."""
        if self.default is REQUIRED and not self.option:
            text = "required"
        else:
            text = f"`{_json(self.default_for('cluster'))}`"
            if self.option:
                text += f" (`--{self.option.replace('_', '-')}`'s)"
        if self.fork_default is not SAME:
            text += f"; fork mode: `{_json(self.fork_default)}`"
        return text


def declare(kind: Kind, help: str, **declaration: Any) -> Any:
    """One row of the schema: a Spec field without a dataclass default (only `build` makes a Spec)."""
    return dataclasses.field(metadata={"field": Field("", kind, help, **declaration)})


def fields(cls: type) -> tuple[Field, ...]:
    """The rows of a Spec class, in order, with their names."""
    return tuple(dataclasses.replace(f.metadata["field"], name=f.name) for f in dataclasses.fields(cls))


def daemon_options(cls: type) -> tuple[str, ...]:
    """The `prun run` options the daemon reads itself (its log writer's): never among a spec's run_args."""
    return (*(f.option for f in fields(cls) if f.daemon and f.option), *LOG_TIME_OPTIONS)


# ---- checks: each raises ValueError with what is wrong ---------------------------------------------


def one_of(*choices: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in choices:
            raise ValueError(f"expected {' or '.join(choices)}, got {value!r}")

    return check


def not_empty(value: Any) -> None:
    if not value:
        raise ValueError("it is empty")


def absolute(value: str) -> None:
    if not os.path.isabs(value):
        raise ValueError(f"expected an absolute path, got {value!r}")


def absolute_or_empty(value: str) -> None:
    if value:
        absolute(value)


def at_most(limit: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value > limit:
            raise ValueError(f"expected at most {limit}, got {value!r}")

    return check


def one_line(value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError("it holds a line break")


def variables(env: dict[str, str]) -> None:
    """Environment variables: names that a process's environment can hold."""
    for key in env:
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"{key!r} cannot name an environment variable")
        if "\0" in env[key]:
            raise ValueError(f"{key} holds a NUL character")


def binds(addresses: list[str]) -> None:
    """Addresses the daemon binds itself: not fd://N (its own descriptors), unix: paths absolute."""
    from prun.cluster import listeners

    for address in addresses:
        kind, target = listeners.parse(address)  # UsageError: invalid bind address ...
        if kind == "fd":
            raise ValueError(f"{address}: the daemon binds an app's addresses itself (give HOST:PORT or unix:PATH)")
        if kind == "unix" and not os.path.isabs(str(target)):
            raise ValueError(f"{address}: a unix: path in a spec is absolute")


def run_args(args: list[str], excluded: tuple[str, ...]) -> None:
    """Options of `prun run` as arguments: each one the table has but `excluded`, each value its parser takes."""
    from prun.cluster.options import OPTIONS, parse

    takes = {o.long: o for o in OPTIONS if not o.argument and o.name not in excluded}
    negated = {f"--no-{o.long[2:]}" for o in takes.values() if o.flag and o.default is True}
    i = 0
    while i < len(args):
        word = args[i]
        flag, sep, inline = word.partition("=")
        option = takes.get(flag)
        if option is None and word in negated:
            i += 1
            continue
        if option is None:
            what = "an option the spec holds as a field" if flag.lstrip("-").replace("-", "_") in excluded else \
                "not an option of prun run"
            raise ValueError(f"{word!r} is {what}")
        if option.flag:
            if sep:
                raise ValueError(f"{flag} takes no value")
            i += 1
            continue
        if not sep and i + 1 >= len(args):
            raise ValueError(f"{flag} needs a value")
        value = inline if sep else args[i + 1]
        parse(option.name, value, f"{flag} {value!r}")  # UsageError: invalid --timeout 'soon': ...
        i += 1 if sep else 2


# ---- building a spec -------------------------------------------------------------------------------

T = TypeVar("T")


def _label(data: dict[str, Any]) -> str:
    value = data.get("name")
    return f"app {names.shown(value)}" if isinstance(value, str) else "an app without a name"


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """An older spec's fields as today's: max_memory (bytes) became --max-memory-restart in run_args."""
    if "max_memory" not in data:
        return data
    data = dict(data)
    limit = data.pop("max_memory")
    args = data.get("run_args", [])
    if limit and isinstance(args, list) and "--max-memory-restart" not in args:
        data["run_args"] = [*args, "--max-memory-restart", str(limit)]
    return data


def build(cls: type[T], data: Any, where: str, ignore_unknown: Callable[[str], None] | None = None) -> T:
    """A `cls` (Spec) from a JSON object, every field read through the schema; SpecError if it does not fit.

    `where` names the source in messages (a file, "the start request"); `ignore_unknown`, if given, is
    told of unknown fields, which are then ignored instead of refused.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{where}: an app's spec is an object, not {type(data).__name__}")
    data = _upgrade(data)
    label = _label(data)
    rows = fields(cls)
    unknown = sorted(set(data) - {row.name for row in rows})
    if unknown:
        listed = f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
        if ignore_unknown is None:
            raise SpecError(f"{where}: {label}: {listed}")
        ignore_unknown(f"{where}: {label}: ignoring {listed} (another version of prun wrote them)")
    mode = data.get("mode")
    values: dict[str, Any] = {}
    for row in rows:
        try:
            if row.name in data:
                values[row.name] = row.read(data[row.name])
            else:
                values[row.name] = row.default_for(str(mode))
                if values[row.name] is REQUIRED:
                    raise ValueError(f"{row.name} is missing")
        except ValueError as exc:
            raise SpecError(f"{where}: {label}: {exc}") from None
    problem = _mode_problem(values)
    if problem:
        raise SpecError(f"{where}: {label}: {problem}")
    return cls(**values)


def _mode_problem(values: dict[str, Any]) -> str:
    """What the fields of one mode say against the other's, if anything."""
    if values["mode"] == "cluster":
        if not names.TARGET.fullmatch(values["target"]):
            return f"invalid target {values['target']!r}: a cluster-mode target is MODULE:ATTR"
        if not values["bind"]:
            return "a cluster-mode app needs a bind list"
        if values["command"]:
            return "command is for fork mode only"
    else:
        if not values["command"]:
            return "a fork-mode app needs a command"
        if values["bind"]:
            return "bind is for cluster mode only (a fork-mode app has no listener)"
    return ""


# ---- PROTOCOL.md -----------------------------------------------------------------------------------

PROTOCOL_BEGIN = "<!-- spec: generated from cluster/daemon/spec.py by `python -m prun.cluster.daemon.spec` -->"
PROTOCOL_END = "<!-- end of spec -->"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def protocol_table(cls: type) -> str:
    """PROTOCOL.md's table of a spec's fields."""
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for row in fields(cls):
        meaning = row.help.replace("|", "\\|")
        rows.append(f"| `{row.name}` | {row.kind.json} | {row.default_text()} | {meaning} |")
    return "\n".join(rows)


def update_protocol(path: str, cls: type) -> bool:
    """Rewrite the spec table of PROTOCOL.md from the rows of `cls` (Spec); whether it changed."""
    with open(path) as fh:
        text = fh.read()
    start = text.index(PROTOCOL_BEGIN) + len(PROTOCOL_BEGIN)
    end = text.index(PROTOCOL_END, start)
    new = text[:start] + "\n" + protocol_table(cls) + "\n" + text[end:]
    if new != text:
        with open(path, "w") as fh:
            fh.write(new)
    return new != text

