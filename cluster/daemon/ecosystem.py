"""The ecosystem file: several apps in one prun.toml, for `prun start/reload/restart/stop/delete prun.toml`.

    [[apps]]
    name = "api"
    target = "app:server"          # MODULE:ATTR (cluster mode), a script or a command (fork mode)
    instances = 2
    bind = ["127.0.0.1:8000"]      # any option of `prun run`, by its name
    env = { MODE = "dev" }

    [apps.env_production]          # merged into env by --env production
    MODE = "prod"

`cwd` (default: the file's directory) is relative to the file. The file is data, never executed.
`name` and `namespace` follow the rule of names (cluster/names.py); every other key is checked by the
client as the same option on the command line would be, then by the daemon's schema (schema.py).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prun.cluster import names
from prun.cluster.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

START_KEYS = {"name", "target", "namespace", "instances", "env", "autorestart", "cwd", "combined_file"}
# The type of each key of `prun start`'s own that is not an option of `prun run` (those: their parsers).
START_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "namespace": (str,), "instances": (int, str),
                                            "combined_file": (str,),
                                            "autorestart": (bool,), "cwd": (str,)}


KIND_NAMES = {str: "a string", int: "a whole number", bool: "true or false"}


def read(path: str, env_name: str | None = None, only: str | None = None) -> list[dict[str, Any]]:
    """One dict of Client.start's arguments per [[apps]] table (of those --only names, comma-separated).

    UsageError if `env_name` names a section no app has (a misspelt --env is not the base env), or --only
    an app the file does not hold."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cannot read {path}: invalid TOML ({exc})") from None
    except RecursionError:
        raise UsageError(f"cannot read {path}: its arrays or tables are nested too deeply") from None
    apps = data.get("apps")
    if not isinstance(apps, list) or not apps:
        raise UsageError(f"{path} has no [[apps]] table")
    from prun.cluster.options import BY_NAME, FILE_KEYS, nearest

    run_names = set(BY_NAME) - {"app", "name", "env", "instances"}
    aliases = {key: option.name for key, option in FILE_KEYS.items() if key != option.name}  # workers: instances
    base = os.path.dirname(os.path.abspath(path))
    result = []
    for i, table in enumerate(apps):
        where = f"[[apps]] {i + 1} in {path}"
        if not isinstance(table, dict) or not isinstance(table.get("target"), str):
            raise UsageError(f"{where}: needs a target (MODULE:ATTR, a script or a command)")
        args: dict[str, Any] = {"env": {}}
        for key, value in table.items():
            name = key.replace("-", "_")
            name = aliases.get(name, name)
            if name.startswith("env_"):
                if name[4:] == env_name:
                    if not isinstance(value, dict):
                        raise UsageError(f"{where}: {key} is a table of variables")
                    args["env"].update({str(k): str(v) for k, v in value.items()})
                continue
            if name == "env":
                if not isinstance(value, dict):
                    raise UsageError(f"{where}: env is a table of variables")
                args["env"] = {str(k): str(v) for k, v in value.items()} | args["env"]
            elif name == "max_memory":  # the name it had before --max-memory-restart
                args["max_memory_restart"] = value
            elif name in START_KEYS or name in run_names:
                kinds = START_TYPES.get(name, ())
                if kinds and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
                    raise UsageError(f"{where}: {key} must be {' or '.join(KIND_NAMES[k] for k in kinds)}")
                if name in ("name", "namespace"):
                    try:
                        names.check(value)
                    except ValueError as exc:
                        raise UsageError(f"{where}: invalid {key} {names.shown(value)}: {exc}") from None
                args[name] = value
            else:
                hint = nearest(name, START_KEYS | run_names | set(aliases)).replace("_", "-")
                raise UsageError(f"{where}: unknown key {key!r}{hint}")
        if not args.get("name"):
            from prun.cluster.client import APP_PATTERN, default_name

            target = str(args["target"])
            mode = "cluster" if APP_PATTERN.fullmatch(target) else "fork"
            args["name"] = default_name(target, mode, target.split() or [target])
        args["cwd"] = os.path.join(base, str(args.get("cwd", ".")))
        if "bind" in args and isinstance(args["bind"], str):
            args["bind"] = [args["bind"]]
        for flag in ("factory", "proxy_headers", "container"):
            if flag in args:
                args[flag] = bool(args[flag])
        if "instances" in args:
            args["instances"] = str(args["instances"])
        result.append(args)
    if env_name is not None and not any(isinstance(t, dict) and f"env_{env_name}" in
                                        {k.replace("-", "_") for k in t} for t in apps):
        sections = sorted({k.replace("-", "_")[4:] for t in apps if isinstance(t, dict) for k in t
                           if k.replace("-", "_").startswith("env_")})
        known = f" (it has: {', '.join(sections)})" if sections else " (it has none)"
        raise UsageError(f"{path} has no [apps.env_{env_name}] section for --env {env_name}{known}")
    if only is not None:
        wanted = [n for n in only.split(",") if n]
        missing = [n for n in wanted if n not in {a["name"] for a in result}]
        if missing or not wanted:
            raise UsageError(f"--only {only}: no app {missing[0] if missing else ''!r} in {path}")
        result = [a for a in result if a["name"] in wanted]
    return result
