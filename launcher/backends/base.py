"""The one small interface every backend implements.

A backend turns planned runs into jobs. It never decides *whether* to submit (the manifest does that, from the
run directories and `status()`), and it never blocks on a job: `status()` asks the backend what it knows now.
Each run's job executes exactly `launcher.topology.launch_argv` for its topology (the trainer, or the trainer under
`torch.distributed.run`; inside a container where configured); the
run config it reads is the resolved config the launcher wrote to `runs/<sweep>/<run-id>/launch.yaml`, whose
`output_dir` is the run directory.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from launcher.sweep import PlannedRun, Sweep
from launcher.topology import trainer_command as trainer_command
from ni.errors import TkError


class BackendUnavailable(TkError):
    """The backend could not be asked (SLURM's controller did not answer): the settings may be fine, and a run it
    may still hold is 'unknown', never 'missing'."""


JobState = Literal["pending", "running", "completed", "failed", "preempted", "cancelled", "unknown"]


@dataclass(frozen=True)
class Job:
    """What a backend hands back for one run: an id it can look up later (several ids after retries)."""

    run_id: str
    job_id: str


@dataclass(frozen=True)
class RunSpec:
    """A run ready to submit: where its resolved config and directory live."""

    run: PlannedRun
    run_dir: Path
    config_path: Path  # runs/<sweep>/<run-id>/launch.yaml


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


class Backend(Protocol):
    name: str

    def render(self, sweep: Sweep, specs: Sequence[RunSpec]) -> dict[str, str]:
        """The exact artifacts that would be submitted (file name -> text), for `plan --render`. No network."""
        ...

    def check(self, sweep: Sweep) -> None:
        """Raise ConfigError before anything is submitted when a required setting is missing (image, partition)."""
        ...

    def submit(self, sweep: Sweep, specs: Sequence[RunSpec]) -> list[Job]:
        """Submit these runs (none of which is pending or running) and return one Job per run."""
        ...

    def status(self, jobs: Sequence[Job]) -> dict[str, JobState]:
        """Job id -> state, as the backend sees it now; BackendUnavailable when it cannot be asked."""
        ...

    def cancel(self, jobs: Sequence[Job]) -> None: ...
