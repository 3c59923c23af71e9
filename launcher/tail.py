"""Following growing log files, shared by the backends' `logs`: new complete lines of a file, printing several
files until the job ends, cutting a log into attempts, and the notes a follower writes between them."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from launcher.backends.base import Backend, BackendUnavailable, Job, JobState
from ni.errors import ConfigError
from ni.run_layout import RunLayout


class FileTail:
    """New complete lines of a growing file (a partial last line waits for its newline)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def read_all(self) -> list[str]:
        return self.read_new()

    def read_new(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, 2)
                if size < self.offset:  # truncated / replaced: start over
                    self.offset, self.partial = 0, b""
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in lines]

    def flush(self) -> list[str]:
        rest = self.read_new()
        if self.partial:
            rest.append(self.partial.decode("utf-8", errors="replace"))
            self.partial = b""
        return rest


def follow_files(files: list[tuple[FileTail, Callable[[str], None]]], still_running: Callable[[], bool],
                 poll: float, on_line: Callable[[FileTail, str], None] | None = None) -> None:
    """Print new lines of each file until `still_running()` says no, then drain once more."""
    last_check = 0.0
    running = True
    while True:
        got = False
        for tail, emit in files:
            for line in tail.read_new():
                got = True
                if on_line is not None:
                    on_line(tail, line)
                emit(line)
        if not running:
            for tail, emit in files:
                for line in tail.flush():
                    emit(line)
            return
        if time.monotonic() - last_check >= max(poll, 1.0) or not got:
            last_check = time.monotonic()
            running = still_running()
            if not running:
                continue  # drain what was written meanwhile
        time.sleep(poll)


def split_attempts(lines: list[str], marker: re.Pattern[str]) -> list[list[str]]:
    """Lines cut before each attempt marker (lines before the first marker belong to the first attempt)."""
    attempts: list[list[str]] = [[]]
    for line in lines:
        if marker.search(line) and any(attempts[-1]):
            attempts.append([])
        attempts[-1].append(line)
    return attempts


def last(lines: list[str], n: int | None) -> list[str]:
    """The last `n` lines (None or negative: all)."""
    return lines if n is None or n < 0 else (lines[-n:] if n else [])


def resumed_events(run_dir: Path) -> list[dict[str, Any]]:
    """The trainer's `resumed` records in the run's train log, oldest first."""
    return RunLayout(run_dir).resumed_events()


def json_record(line: str) -> dict[str, Any]:
    """One line of a JSON-lines log as a mapping ({} for a torn or foreign line)."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return rec if isinstance(rec, dict) else {}


def restart_line(k: int, why: str, resumed: list[dict[str, Any]]) -> str:
    where = ""
    if k - 1 < len(resumed):
        r = resumed[k - 1]
        where = f"; the trainer resumed at step {r.get('step')} ({r.get('checkpoint', '')})"
    return f"# --- restart {k}: {why}{where}"


class Out:
    """Where log lines go (stdout; our own notes too, as '# ...' lines)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def job_state(backend: Backend, job: Job) -> JobState | None:
    """The job's state; None when the backend cannot be asked now (e.g. slurmctld down)."""
    try:
        return backend.status([job]).get(job.job_id, "unknown")
    except (OSError, ConfigError, BackendUnavailable):
        return None


def run_finished(run_dir: Path) -> bool:
    """The run directory says the trainer has ended (done, failed or stopped with its state saved)."""
    return RunLayout(run_dir).finished()
