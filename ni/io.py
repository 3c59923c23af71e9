"""Small file helpers: atomic writes (temp file + rename) and JSON lines."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from ni.errors import ConfigError


def now() -> str:
    """The local time as the run directories and the manifests record it, e.g. 2026-12-02T12:47:58+0000."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.

    A failure (exception, Ctrl-C) removes the temp file, so no half-written output is ever left behind.
    """
    target = Path(path)
    if target.is_dir():  # named here, not as the temp file the rename would fail on
        raise IsADirectoryError(errno.EISDIR, "is a directory; give the path of a file to write", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared like any file
    try:
        with open(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def dumps_line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Write rows as JSON lines atomically; returns the number of rows."""
    n = 0
    with atomic_open(path, "wb") as fh:
        for row in rows:
            fh.write(dumps_line(row))
            n += 1
    return n


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Fill a temp directory beside `path`; it replaces `path` only if the block succeeds."""
    target = Path(path)
    if target.exists() and not target.is_dir():  # a file is never replaced by a folder
        raise NotADirectoryError(errno.ENOTDIR, "is a file; give the path of a folder to write", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise FileExistsError(target)
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def refuse_overwriting_inputs(out: str | os.PathLike[str] | None, inputs: dict[str, Any], flag: str = "--out") -> None:
    """No command writes over one of its inputs: `out` may not be an input, nor a folder holding one (that folder
    would be replaced). `inputs`: a name for the message -> a path (or None)."""
    if out is None:
        return
    target = Path(out).resolve()
    for name, given in inputs.items():
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source or target in source.parents:
            raise ConfigError(f"{flag} {out}: would write over the input {name} ({given})",
                              hint="Write the output somewhere else; no command replaces one of its inputs.")
