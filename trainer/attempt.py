"""One attempt of a run, as its run directory tells it: the claim of RUN, then status.json from "running" to how
the attempt ended (completed + DONE, preempted with exit code EXIT_PREEMPTED, or failed with the error in one
line). The steps of `trainer/run.py` run inside `run_status`; none of them writes status.json's state."""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ni.errors import TkError
from trainer.config import RunConfig
from trainer.rundir import EXIT_PREEMPTED, PARTIAL_PREDICTIONS, RunDir


class Preempted(Exception):
    """A stop signal ended the attempt with its state saved; the next attempt resumes. `status`: what status.json
    records of where it stopped."""

    def __init__(self, message: str, **status: Any):
        super().__init__(message)
        self.status = status


@dataclass
class Attempt:
    """The attempt in progress (what `run_status` yields); status.json's read side is `ni.run_layout.RunStatus`."""

    run: RunDir
    writes: bool  # only the main process writes status.json
    started: float
    exit_code: int = 0

    def update(self, **fields: Any) -> None:
        """More facts about the running attempt."""
        if self.writes:
            self.run.set_status("running", **fields)

    def wall_seconds(self) -> float:
        return round(time.time() - self.started, 1)


@contextmanager
def run_status(run: RunDir, writes: bool = True, **running: Any) -> Iterator[Attempt]:
    """One attempt of `run`, as status.json tells it. On entry "running" (the attempt counted, `running` recorded).
    The block ends: the predictions kept for a resume are dropped, "completed", then DONE. A `Preempted` ends it:
    "preempted" and `exit_code` EXIT_PREEMPTED (the state is saved, so it is not an error). Anything else: "failed"
    with the error in one line, and raised on."""
    status = Attempt(run, writes, time.time())
    if writes:
        run.set_status("running", attempt=run.status().get("attempt", 0) + 1, **running)
    try:
        yield status
        if writes:
            shutil.rmtree(run.path / PARTIAL_PREDICTIONS, ignore_errors=True)
            run.set_status("completed", wall_seconds=status.wall_seconds())
            run.mark_done()
    except Preempted as e:
        if writes:
            run.set_status("preempted", **e.status, wall_seconds=status.wall_seconds())
            print(f"{run.path}: {e}")
        status.exit_code = EXIT_PREEMPTED
    except BaseException as e:
        if writes:
            run.set_status("failed", error=error_line(e), wall_seconds=status.wall_seconds())
        raise


def error_line(e: BaseException) -> str:
    return str(e) if isinstance(e, TkError) else "".join(traceback.format_exception_only(type(e), e)).strip()


def claim(run: RunDir, cfg: RunConfig, force: bool, accelerator: Any = None) -> bool:
    """Take RUN for this attempt (the main process decides, the others follow); False: it completed before."""
    main = accelerator is None or accelerator.is_main_process
    if main:
        action = run.claim(cfg, force)
    if accelerator is not None:
        accelerator.wait_for_everyone()
        if not main:
            action = "skip" if run.done() else "go"
    if action == "skip" and main:
        print(f"{run.path}: already completed (use --force to run again)")
    return action != "skip"
