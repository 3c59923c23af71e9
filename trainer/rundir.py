"""The run directory: one layout for every backend.

    RUN/config.yaml             resolved config (written first; decides whether RUN may be reused)
    RUN/status.json             {"state": running|completed|failed|preempted, timestamps, error}
    RUN/train_log.jsonl         one JSON object per logging step / evaluation (appended line by line)
    RUN/checkpoints/step-N/     accelerate state + trainer_state.json; counts only once COMPLETE exists
    RUN/predicted_examples.jsonl, RUN/metrics.json
    RUN/DONE                    written last

Every file except the append-only log is written to a temp file and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from ni.errors import ConfigError
from ni.io import atomic_open, dumps_line, write_json
from trainer.config import RunConfig, validate_config

STATES = ("running", "completed", "failed", "preempted")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunDir:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    # -- identity -------------------------------------------------------------------------------------

    def done(self) -> bool:
        return (self.path / "DONE").is_file()

    def stored_config(self) -> RunConfig | None:
        file = self.path / "config.yaml"
        if not file.is_file():
            return None
        return validate_config(yaml.safe_load(file.read_text()), str(file))

    def claim(self, cfg: RunConfig, force: bool) -> str:
        """Decide what to do with this directory: 'skip' (already completed), 'resume' or 'start'.

        A directory holding another config is never reused: results would silently mix.
        """
        stored = self.stored_config()
        if stored is not None and stored.digest() != cfg.digest():
            raise ConfigError(
                f"{self.path}: holds a run of a different config (config.yaml differs)",
                hint="Use another output_dir; this tool never overwrites another run.",
            )
        if self.done() and not force:
            return "skip"
        if force:
            for name in ("checkpoints", "DONE", "metrics.json", "predicted_examples.jsonl", "train_log.jsonl"):
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path / "config.yaml") as fh:
            fh.write(cfg.to_yaml())
        return "resume" if self.latest_checkpoint() is not None else "start"

    # -- status and logs ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        file = self.path / "status.json"
        return orjson.loads(file.read_bytes()) if file.is_file() else {}

    def set_status(self, state: str, **extra: Any) -> None:
        assert state in STATES
        status = self.status()
        status.setdefault("started_at", _now())
        status.update(extra, state=state, updated_at=_now())
        if state != "running":
            status["finished_at"] = _now()
        else:
            status.pop("finished_at", None)
            status.pop("error", None)
        write_json(self.path / "status.json", status)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / "train_log.jsonl", "ab") as fh:  # one write per line: appends stay whole
            fh.write(dumps_line(record))

    def mark_done(self) -> None:
        with atomic_open(self.path / "DONE") as fh:
            fh.write(_now() + "\n")

    # -- checkpoints ----------------------------------------------------------------------------------

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:09d}"

    def complete_checkpoints(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if (p / "COMPLETE").is_file())

    def latest_checkpoint(self) -> Path | None:
        found = self.complete_checkpoints()
        return found[-1] if found else None

    def prune_checkpoints(self, keep: int) -> None:
        for old in self.complete_checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        if self.checkpoints.is_dir():  # half-written leftovers of an interrupted save
            complete = set(self.complete_checkpoints())
            for p in self.checkpoints.iterdir():
                if p.is_dir() and p not in complete and p != self.checkpoints / ".saving":
                    shutil.rmtree(p, ignore_errors=True)
