"""Names that become paths, job names or parts of mount lists: one rule, checked where the name enters.

A name is letters, digits, '.', '_' and '-', starting with a letter or digit: one path component that stays under
its root ('..', '/', absolute paths are impossible), and safe in SLURM job names, Beaker names and the
comma/colon-separated lists of container mounts.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ALLOWED = "letters, digits, '.', '_', '-', starting with a letter or digit, at most 128 characters"


def bad_name(value: str) -> str | None:
    """Why `value` is not a safe name (one sentence), or None when it is."""
    if NAME.fullmatch(value):
        return None
    return f"'{value}' is not a safe name ({ALLOWED}; no '/', ',', ':' or spaces)"


def check_name(value: str) -> str:
    """For pydantic validators: raise ValueError with the allowed form."""
    why = bad_name(value)
    if why:
        raise ValueError(why)
    return value
