"""The daemon's RPC: JSON messages, one per line, over $PRUN_HOME/rpc.sock (the protocol: PROTOCOL.md here).

    -> {"id": 7, "command": "stop", "args": {"target": "api"}}
    <- {"id": 7, "result": [...]}
    <- {"id": 7, "error": {"code": "NO_SUCH_APP", "message": "no app named or numbered 'api'"}}

This module is the protocol, shared by both ends: the client imports it too, so nothing here imports asyncio
at module level. The daemon's side of the socket (who may connect, each connection's life) is rpcserver.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prun.cluster.daemon.jsonload import TooDeep, loads

if TYPE_CHECKING:
    import asyncio

MAX_MESSAGE = 1 << 20  # bytes, newline included

# Fault codes: a name for programs, with a sentence for people.
BAD_MESSAGE = "BAD_MESSAGE"  # not one JSON object per line, too long, or no command
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
BAD_ARGUMENTS = "BAD_ARGUMENTS"  # the command's arguments are missing or invalid
NO_SUCH_APP = "NO_SUCH_APP"  # no app has that name, id or namespace
ALREADY_RUNNING = "ALREADY_RUNNING"  # start of a name that exists and is not stopped
START_FAILED = "START_FAILED"  # the listeners could not be bound, or the app could not boot
NOT_RUNNING = "NOT_RUNNING"  # scale of an app that is not online
WRITE_FAILED = "WRITE_FAILED"  # a file the command exists to write (the dump) could not be written: a full disk
SHUTTING_DOWN = "SHUTTING_DOWN"  # the daemon is stopping (prun kill)
FORBIDDEN = "FORBIDDEN"  # the peer is neither the daemon's uid nor root: sent once, then the connection closes
BUSY = "BUSY"  # out of file descriptors with no idle connection to close: sent once, then the connection closes
INTERNAL = "INTERNAL"  # a bug in the daemon: the message says where

CODES = (BAD_MESSAGE, UNKNOWN_COMMAND, BAD_ARGUMENTS, NO_SUCH_APP, ALREADY_RUNNING, START_FAILED, NOT_RUNNING,
         WRITE_FAILED, SHUTTING_DOWN, FORBIDDEN, BUSY, INTERNAL)


class RpcError(Exception):
    """A fault: a code from CODES and a sentence."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id  # when the request could be read that far


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    """(id, command, args) of one request line, or RpcError(BAD_MESSAGE)."""
    try:
        message = loads(line)
    except TooDeep as exc:
        raise RpcError(BAD_MESSAGE, f"refusing a message {exc}") from None
    except ValueError as exc:
        raise RpcError(BAD_MESSAGE, f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise RpcError(BAD_MESSAGE, "a message is a JSON object")
    command = message.get("command")
    if not isinstance(command, str):
        raise RpcError(BAD_MESSAGE, "a message needs a \"command\" string", message.get("id"))
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise RpcError(BAD_MESSAGE, "\"args\" is a JSON object", message.get("id"))
    return message.get("id"), command, args


# A handler returns the result, or STREAM to keep the connection as an event subscription.
Handler = Callable[[str, dict[str, Any], "asyncio.StreamWriter"], Awaitable[Any]]
STREAM = object()
