"""The run directory: its layout (one set of names) and its read side, for every backend and every reader.

    RUN/config.yaml             resolved config (written first; decides whether RUN may be reused)
    RUN/status.json             {"state": running|completed|failed|preempted, timestamps, error, total_steps, ...}
    RUN/train_log.jsonl         one JSON object per logging step / evaluation (appended line by line)
    RUN/checkpoints/step-N/     accelerate state + trainer_state.json + a copy of train_log.jsonl;
                                counts only once COMPLETE exists
    RUN/predictions.partial/    while predicting: finished test batches per rank (an attempt stopped there resumes),
                                and `identity`, the hash of the config and the encoded examples they were made for
    RUN/predicted_examples.jsonl, RUN/metrics.json
    RUN/DONE                    written last
    RUN/run.lock                flock held by the one process that runs RUN (see ni/locks.py), released at its exit

`trainer/rundir.py` writes it (every file except the append-only log to a temp file renamed into place); reports,
the launcher's states, progress and logs, the Beaker fake and the trainer resuming read it through `RunLayout`.
Reading never fails on what a live or killed trainer may leave: a torn last log line is skipped, an unreadable
status.json reads as empty and says why (`RunStatus.problem`).

`checkpoint.dir` moves the checkpoints out of RUN (`RunLayout(path, checkpoints=...)`); such a directory holds
`config.sha256`, the digest of the run it belongs to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ni.locks import holder_if_locked

STATES = ("running", "completed", "failed", "preempted")  # what status.json's "state" may say
ENDED = ("completed", "failed", "preempted")  # an attempt is over (preempted: run it again to resume)

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
LOG_FILE = "train_log.jsonl"
DONE_FILE = "DONE"
LOCK_FILE = "run.lock"  # held by the process that runs this directory, for as long as it runs
PREDICTIONS_FILE = "predicted_examples.jsonl"
METRICS_FILE = "metrics.json"
PARTIAL_PREDICTIONS = "predictions.partial"  # test batches an attempt stopped while predicting had finished
PARTIAL_IDENTITY = "identity"  # in PARTIAL_PREDICTIONS: what the kept batches were computed from
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
COMPLETE_FILE = "COMPLETE"  # in a checkpoint: written last, after its state and TRAINER_STATE_FILE
TRAINER_STATE_FILE = "trainer_state.json"
OWNER_FILE = "config.sha256"  # in an external checkpoint dir: the digest of the config whose checkpoints it holds
MARKERS = (CONFIG_FILE, STATUS_FILE, PREDICTIONS_FILE, DONE_FILE)  # any of them makes a directory a run directory


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class RunStatus:
    """What a run directory says about its run: status.json (as written) and whether DONE exists."""

    record: dict[str, Any] = field(default_factory=dict)  # status.json; {} when absent or unreadable
    done: bool = False
    problem: str | None = None  # why status.json could not be read; None when it could or is absent

    @property
    def state(self) -> str | None:
        """'completed' once DONE exists, else the state status.json names, else None (no or no valid status)."""
        if self.done:
            return "completed"
        state = self.record.get("state")
        return state if state in STATES else None

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def error(self) -> str:
        return str(self.record.get("error") or "")

    @property
    def step(self) -> int | None:
        """The step an attempt stopped at (written when it ends preempted)."""
        return _int(self.record.get("step"))

    @property
    def total_steps(self) -> int | None:
        """The optimizer steps the trainer plans (written once training starts; None before, or by older trainers)."""
        return _int(self.record.get("total_steps"))

    @property
    def world_size(self) -> int | None:
        return _int(self.record.get("world_size"))


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE_FILE).is_file()


def trainer_state(checkpoint: Path) -> dict[str, Any]:
    """A complete checkpoint's trainer_state.json (step, total_steps, the batch it was trained with)."""
    state = orjson.loads((checkpoint / TRAINER_STATE_FILE).read_bytes())
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint / TRAINER_STATE_FILE}: not a JSON object")
    return state


class RunLayout:
    """One run directory, read. `checkpoints`: the config's `checkpoint.dir` (None: RUN/checkpoints)."""

    def __init__(self, path: str | os.PathLike[str], checkpoints: str | os.PathLike[str] | None = None):
        self.path = Path(path)
        self.external = checkpoints is not None
        self.checkpoints = Path(checkpoints) if checkpoints is not None else self.path / CHECKPOINTS_DIR

    def is_run_dir(self) -> bool:
        return any((self.path / m).exists() for m in MARKERS)

    def done(self) -> bool:
        return (self.path / DONE_FILE).is_file()

    def read_status(self, strict: bool = False) -> RunStatus:
        """`strict`: an OSError other than a missing file is raised, not read as empty (for the writer, which must
        not overwrite a status.json it could not read)."""
        done = self.done()
        try:
            raw = orjson.loads((self.path / STATUS_FILE).read_bytes())
        except FileNotFoundError:
            return RunStatus({}, done)
        except (OSError, orjson.JSONDecodeError) as e:
            if strict and not isinstance(e, orjson.JSONDecodeError):
                raise
            return RunStatus({}, done, f"{STATUS_FILE} unreadable: {(str(e).splitlines() or [type(e).__name__])[0]}")
        if not isinstance(raw, dict):
            return RunStatus({}, done, f"{STATUS_FILE} unreadable: not a JSON object")
        return RunStatus(raw, done)

    def status(self) -> dict[str, Any]:
        """status.json as written; {} when absent or unreadable (a run that wrote none is judged by DONE)."""
        return self.read_status().record

    def finished(self) -> bool:
        """DONE exists, or status.json says the last attempt ended (completed, failed or preempted)."""
        return self.read_status().ended

    def holder(self) -> dict[str, Any] | None:
        """The record of the live process running RUN now ({} if it left none), or None when none does."""
        return holder_if_locked(self.path / LOCK_FILE)

    # -- the training log -----------------------------------------------------------------------------

    def train_log(self, last: int | None = None) -> list[dict[str, Any]]:
        """The records of train_log.jsonl in order (only the `last` lines' when given). Lines that do not decode
        are skipped: a torn last line while the trainer appends, or one cut by a crash."""
        try:
            lines = (self.path / LOG_FILE).read_bytes().splitlines()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return []
        out = []
        for line in lines if last is None else lines[-last:]:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def last_step(self) -> int:
        """The highest step among the log's recent records (0 before the first)."""
        return max((_int(r.get("step")) or 0 for r in self.train_log(last=20)), default=0)

    def resumed_events(self) -> list[dict[str, Any]]:
        """One record per attempt that resumed from a checkpoint: {"event": "resumed", "step", "checkpoint"}."""
        return [r for r in self.train_log() if r.get("event") == "resumed"]

    # -- checkpoints ----------------------------------------------------------------------------------

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step:09d}"

    def complete_checkpoints(self) -> list[Path]:
        """The checkpoints a run may resume from, oldest first (a save interrupted before COMPLETE does not count)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and is_complete(p))

    def latest_checkpoint(self) -> Path | None:
        found = self.complete_checkpoints()
        return found[-1] if found else None
