"""The run directory's writer: claim, status, log, checkpoints. The layout and the read side are
`ni/run_layout.py` (`RunLayout`, which `RunDir` extends): every name used here is defined there.

Every file except the append-only log is written to a temp file and renamed into place.

`checkpoint.dir` moves the checkpoints out of RUN, to storage that outlives it (a Beaker job resumed after a
preemption gets a fresh, empty result dataset as RUN, but the same Weka path). Such a directory holds
`config.sha256`, the digest of the run it belongs to: a run never resumes another config's checkpoints. A run
that resumes gets its train_log.jsonl from the checkpoint's copy: whole in a fresh RUN, and never a step twice.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ni.errors import ConfigError
from ni.io import atomic_open, dumps_line, now, write_json
from ni.locks import Busy, FileLock
from ni.run_layout import (
    CHECKPOINT_PREFIX,
    CHECKPOINTS_DIR,
    COMPLETE_FILE,
    CONFIG_FILE,
    DONE_FILE,
    LOCK_FILE,
    LOG_FILE,
    METRICS_FILE,
    OWNER_FILE,
    PARTIAL_IDENTITY,
    PARTIAL_PREDICTIONS,
    PREDICTIONS_FILE,
    STATES,
    STATUS_FILE,
    TRAINER_STATE_FILE,
    RunLayout,
    is_complete,
)
from ni.yamlio import read_yaml
from trainer.config import RunConfig, validate_config

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: the trainer saved its state (status "preempted"); run it again to resume


def partial_identity(cfg: RunConfig, input_ids: Sequence[Sequence[int]]) -> str:
    """The identity of a prediction pass: the run's config digest and every encoded example, in order."""
    h = hashlib.sha256(cfg.digest().encode())
    for ids in input_ids:
        h.update(orjson.dumps(list(ids)) + b"\n")
    return h.hexdigest()


_HELD: dict[Path, FileLock] = {}  # run directories this process holds, until it exits


class RunDir(RunLayout):
    def __init__(self, path: str | os.PathLike[str], checkpoints: str | os.PathLike[str] | None = None):
        """`checkpoints`: the config's `checkpoint.dir` (None: RUN/checkpoints)."""
        super().__init__(path, checkpoints)
        self._lock: FileLock | None = None

    @classmethod
    def of(cls, cfg: RunConfig, path: str | os.PathLike[str]) -> RunDir:
        return cls(path, cfg.checkpoint.dir)

    # -- identity -------------------------------------------------------------------------------------

    def stored_config(self) -> RunConfig | None:
        file = self.path / CONFIG_FILE
        if not file.is_file():
            return None
        return validate_config(read_yaml(file, "run config")[0], str(file))

    def claim(self, cfg: RunConfig, force: bool) -> str:
        """Decide what to do with this directory: 'skip' (already completed), 'resume' or 'start'.

        A directory holding another config is never reused: results would silently mix. Neither is a checkpoint
        dir of another config's run.
        """
        stored = self.stored_config()
        if stored is not None and stored.digest() != cfg.digest():
            raise ConfigError(
                f"{self.path}: holds a run of a different config (config.yaml differs)",
                hint="Use another output_dir; this tool never overwrites another run.",
            )
        owned = self.external and cfg.do_train  # an external checkpoint dir this run writes to
        if owned:
            self._check_owner(cfg)
        self.hold()  # from here on this process alone changes RUN (refusals above leave no trace)
        if self.done() and not force:
            return "skip"
        if force:
            self._reset(owned)
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path / CONFIG_FILE) as fh:
            fh.write(cfg.to_yaml())
        if owned:
            with atomic_open(self.checkpoints / OWNER_FILE) as fh:
                fh.write(cfg.digest() + "\n")
        latest = self.latest_checkpoint() if cfg.do_train else None
        if latest is None:
            return "start"
        self._restore_log(latest)
        return "resume"

    def hold(self) -> None:
        """Take RUN's lock for the rest of this process: two processes never run one directory at once."""
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        lock = _HELD.get(key)  # this process holds it already (another RunDir of the same path)
        if lock is None:
            lock = FileLock(key / LOCK_FILE, "trainer run")
            try:
                lock.acquire(wait=False)
            except Busy as e:
                raise Busy(str(e), hint="A run directory is run by one process at a time: wait for it, or stop it.") from None
            _HELD[key] = lock
        self._lock = lock

    def _reset(self, owned: bool) -> None:
        """--force: drop the outputs and checkpoints of earlier attempts."""
        for name in (CHECKPOINTS_DIR, DONE_FILE, METRICS_FILE, PREDICTIONS_FILE, LOG_FILE, PARTIAL_PREDICTIONS):
            target = self.path / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        if owned and self.checkpoints.is_dir():  # only what the trainer writes there
            for p in self.checkpoints.iterdir():
                if p.is_dir() and (p.name.startswith(CHECKPOINT_PREFIX) or p.name == ".saving"):
                    shutil.rmtree(p)

    def _check_owner(self, cfg: RunConfig) -> None:
        """An external checkpoint dir must be empty or hold this config's checkpoints (never another run's)."""
        owner = self.checkpoints / OWNER_FILE
        if owner.is_file():
            if owner.read_text().strip() != cfg.digest():
                raise ConfigError(
                    f"{self.checkpoints}: holds checkpoints of a different config ({OWNER_FILE} differs)",
                    hint="Use another checkpoint.dir; a run never resumes another run's checkpoints.",
                )
        elif self.complete_checkpoints():
            raise ConfigError(
                f"{self.checkpoints}: holds checkpoints of an unknown run (no {OWNER_FILE})",
                hint="Use another checkpoint.dir; a run never resumes another run's checkpoints.",
            )

    def _restore_log(self, checkpoint: Path) -> None:
        """Resuming: the log becomes the checkpoint's copy (everything up to and including its step). A fresh RUN gets
        its history back; a run killed hard after the checkpoint loses the records of the steps it trains again,
        so no step is logged twice."""
        saved = checkpoint / LOG_FILE
        if saved.is_file():
            with atomic_open(self.path / LOG_FILE, "wb") as fh:
                fh.write(saved.read_bytes())

    # -- kept predictions -----------------------------------------------------------------------------

    def adopt_partial(self, identity: str) -> str | None:
        """Make RUN/predictions.partial/ hold predictions for `identity` only: kept batches computed from anything
        else (another example set, encoding or config, or of unknown origin) are discarded. Returns the one line
        saying so, or None when nothing was discarded. Call on the main rank before any rank reads the folder."""
        folder = self.path / PARTIAL_PREDICTIONS
        note = None
        if folder.is_dir():
            stamp = folder / PARTIAL_IDENTITY
            stored = stamp.read_text(errors="replace").strip() if stamp.is_file() else None
            if stored == identity:
                return None
            if any(folder.glob("rank-*.jsonl")):
                why = "no identity recorded" if stored is None else "made for other examples or another config"
                note = f"{folder}: discarded the kept predictions ({why})"
            shutil.rmtree(folder)
        with atomic_open(folder / PARTIAL_IDENTITY) as fh:
            fh.write(identity + "\n")
        return note

    # -- status and logs ------------------------------------------------------------------------------

    def set_status(self, state: str, **extra: Any) -> None:
        assert state in STATES
        status = self.read_status(strict=True).record  # an unreadable (not torn) status.json is not overwritten
        status.setdefault("started_at", now())
        if state == "running":  # a new attempt: nothing of how the last one ended stays
            for key in ("finished_at", "error", "signal", "phase", "predicted", "step", "wall_seconds"):
                status.pop(key, None)
        if "wall_seconds" in extra:  # an attempt ended: the total over attempts, too
            status["wall_seconds_total"] = round(float(status.get("wall_seconds_total", 0)) + extra["wall_seconds"], 1)
        status.update(extra, state=state, updated_at=now())
        if state != "running":
            status["finished_at"] = now()
        try:
            write_json(self.path / STATUS_FILE, status)
        except OSError as e:
            if e.errno != errno.ENOSPC or state == "running":
                raise
            self._write_status_on_full_disk(status)

    def _write_status_on_full_disk(self, status: dict[str, Any]) -> None:
        """The disk filled up (often while checkpointing): the end state must still be told, or the run would say
        "running" forever. Free what the failed attempt half-wrote, then write again; as a last resort overwrite
        status.json in place (its blocks are allocated already)."""
        self.drop_unfinished_checkpoints()
        data = orjson.dumps(status, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        try:
            write_json(self.path / STATUS_FILE, status)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            with open(self.path / STATUS_FILE, "r+b") as fh:
                fh.write(data)
                fh.truncate()

    def drop_unfinished_checkpoints(self) -> None:
        """Remove checkpoint folders an interrupted save left without COMPLETE."""
        if self.checkpoints.is_dir():
            for p in self.checkpoints.iterdir():
                if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and not is_complete(p):
                    shutil.rmtree(p, ignore_errors=True)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / LOG_FILE, "ab") as fh:  # one write per line: appends stay whole
            fh.write(dumps_line(record))

    def mark_done(self) -> None:
        with atomic_open(self.path / DONE_FILE) as fh:
            fh.write(now() + "\n")

    # -- checkpoints ----------------------------------------------------------------------------------

    def complete_checkpoint(self, target: Path, state: dict[str, Any]) -> None:
        """Finish a saved checkpoint: its trainer state and a copy of the log so far, then COMPLETE (last)."""
        write_json(target / TRAINER_STATE_FILE, state)
        if (self.path / LOG_FILE).is_file():
            shutil.copyfile(self.path / LOG_FILE, target / LOG_FILE)
        (target / COMPLETE_FILE).write_text("")

    def prune_checkpoints(self, keep: int) -> None:
        for old in self.complete_checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        if self.checkpoints.is_dir():  # half-written leftovers of an interrupted save
            complete = set(self.complete_checkpoints())
            for p in self.checkpoints.iterdir():
                if p.is_dir() and p not in complete and p != self.checkpoints / ".saving":
                    shutil.rmtree(p, ignore_errors=True)
