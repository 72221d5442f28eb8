"""Failures a user can act on: a sentence and an exit code, turned into one line by the CLI."""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2


class PrunError(Exception):
    """A failure explained in one sentence, with the exit code prun ends with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class UsageError(PrunError):
    """Bad input on the command line, in the environment or in a config file."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
