"""--env-file: a dotenv file (uvicorn's --env-file, read there by python-dotenv) as variables for the workers.

The lines python-dotenv reads on one line each: `KEY=VALUE`, `export KEY=VALUE`, blank lines, `# comments`;
a value in single quotes is taken as it is, one in double quotes understands \\n, \\t, \\" and \\\\; an unquoted
value ends before ` #`. `${NAME}` and `${NAME:-default}` in an unquoted or double-quoted value are replaced
by prun's environment's NAME, else a NAME set above in the file, else the default (or nothing), as
python-dotenv does when it does not override. A line that is none of these stops prun with its number;
values spread over several lines are not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from prun.cluster.errors import UsageError

LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=\s*(.*?))?\s*")
EXPANSION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def read_env_file(path: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a dotenv file sets, in its order; UsageError naming the file (and line) when it cannot."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise UsageError(f"cannot read --env-file {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read --env-file {path}: it is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read --env-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read --env-file {path}: it is not UTF-8 text") from None
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = LINE.fullmatch(line)
        if match is None:
            raise UsageError(f"--env-file {path}, line {number}: expected KEY=VALUE, got {line.strip()!r}")
        key, raw = match.group(1), match.group(2)
        if raw is None:
            continue  # a bare KEY: python-dotenv gives it no value, and sets nothing
        try:
            found[key] = _value(raw, lambda name: environ.get(name, found.get(name)))
        except ValueError as exc:
            raise UsageError(f"--env-file {path}, line {number}: {exc}") from None
    return found


def _value(raw: str, lookup: Callable[[str], str | None]) -> str:
    def expand(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            known = lookup(match.group(1))
            return known if known is not None else (match.group(2) or "")

        return EXPANSION.sub(one, text)

    if raw[:1] == "'":
        if len(raw) < 2 or not raw.endswith("'") and not re.fullmatch(r"'[^']*'\s+#.*", raw):
            raise ValueError(f"unterminated single quote in {raw!r}")
        return raw[1:raw.index("'", 1)]
    if raw[:1] == '"':
        end = re.match(r'"((?:[^"\\]|\\.)*)"(\s+#.*)?$', raw)
        if end is None:
            raise ValueError(f"unterminated double quote in {raw!r}")
        return expand(re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), "\\" + m.group(1)), end.group(1)))
    return expand(re.sub(r"\s+#.*$", "", raw).strip())
