"""JSON read from outside the daemon's memory (RPC lines, the dump, app records), with its nesting bounded.

`json.loads` recurses once per nested array or object: 100,000 nested arrays (200 KB, well under the RPC
line limit) raise RecursionError, which no caller expects, and anything that walks a value nested just
under that limit recursively (a repr, a copy) can raise it later. prun's own messages and files are at
most a few levels deep, so deeper input is refused when read, as a ValueError. Standard library only:
the client imports rpc.py, which uses this.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32  # levels of arrays and objects; prun writes at most 4


class TooDeep(ValueError):
    """The JSON is nested deeper than MAX_DEPTH."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")


def loads(text: str | bytes) -> Any:
    """The value of `text`; ValueError if it is not JSON, TooDeep if it is nested too deeply."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep() from None
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    """TooDeep if `value` nests arrays and objects deeper than MAX_DEPTH (a walk without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise TooDeep()
        stack.extend((child, depth + 1) for child in children)
