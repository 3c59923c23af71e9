"""One exception root for the whole project: every user-facing error is a `TkError`.

The message is one line that names the file and the field or line, plus a fix-it hint where one helps.
Entry points catch `TkError`, print it and exit non-zero.
"""

from __future__ import annotations


class TkError(Exception):
    """Base of every error a user can fix (bad input, bad config, missing file)."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message if hint is None else f"{message} {hint}")


class DataError(TkError):
    """A task file, split file or predictions file that cannot be used as it is."""


class ConfigError(TkError):
    """A config or command-line value that cannot be used as it is."""
