"""Exclusive locks on files (flock), released when the holder exits however it ends (kill -9 included), and which
process holds one, told in one line.

The lock file holds its holder's identity ({"pid", "start", "host", "what", "since"}) while it is held. A process
is named by its PID *and* its start time (`process_start`), so a PID the kernel reuses is never taken for the
process that had it before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ni.errors import TkError


class Busy(TkError):
    """Another live process holds the lock."""


def process_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot; /proc), or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    try:
        return int(stat.rsplit(b")", 1)[1].split()[19])  # field 22; fields 1-2 end at the comm's ")"
    except (IndexError, ValueError):
        return None


def alive(pid: int, start: int | None) -> bool:
    """Process `pid` runs and is the one that started at `start` (None: PID alone, for records that lack it)."""
    now = process_start(pid)
    if now is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return start is None
        return start is None
    return start is None or now == start


def describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('what')}, since {holder.get('since')})"


def read_holder(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class FileLock:
    """An exclusive flock on `path`. `acquire(wait=False)` raises Busy naming the holder; with `wait`, `on_wait` is
    told who holds it (once) and the call blocks until it is free."""

    def __init__(self, path: str | os.PathLike[str], what: str):
        self.path, self.what = Path(path), what
        self.fd: int | None = None

    def acquire(self, wait: bool = False, on_wait: Callable[[str], None] | None = None, retry_s: float = 2.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            deadline = time.monotonic() + retry_s  # a prober holds it for microseconds: try again briefly
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    holder = describe(read_holder(self.path))
                    if not wait:
                        raise Busy(f"{self.path.parent}: in use by {holder}") from None
                    if on_wait is not None:
                        on_wait(holder)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
            pid = os.getpid()
            me = {"pid": pid, "start": process_start(pid), "host": socket.gethostname(), "what": self.what,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(me) + b"\n", 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder_if_locked(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the lock on `path` now (their record, maybe {}), or None when nobody does. Probes with a shared
    lock held for an instant (a holder that tries at that instant retries; see FileLock.acquire)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(p)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
