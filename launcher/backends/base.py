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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

from launcher.sweep import PlannedRun, Sweep
from launcher.topology import trainer_command as trainer_command
from ni.errors import TkError


class BackendUnavailable(TkError):
    """The backend could not be asked (SLURM's controller did not answer): the settings may be fine, and a run it
    may still hold is 'unknown', never 'missing'."""


class NotStartedError(TkError):
    """A run asked for what only a started run has (its log, its job): it was not submitted or started here."""


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


@dataclass(frozen=True)
class LogTarget:
    """One run whose logs are asked for, and where the launcher keeps its jobs."""

    sweep: Sweep
    run: PlannedRun
    run_dir: Path
    sweep_dir: Path  # runs/<sweep>/: the manifest and what the backend keeps for the sweep
    jobs: list[Job]  # oldest first

    @property
    def manifest_path(self) -> Path:
        return self.sweep_dir / "manifest.json"


class Backend(Protocol):
    """What the launcher asks of a backend; `backends.get_backend(name)` makes one, the same way for each. Settings
    come from the sweep (`sweep.spec.backend.<name>`, a model in `launcher/sweep.py`); callers never ask which
    backend it is."""

    name: str
    runs_here: bool  # True: `submit` runs the jobs in this process and returns when they have ended (local)

    def check(self, sweep: Sweep) -> None:
        """Raise ConfigError before anything is submitted when a required setting is missing (image, partition)."""
        ...

    def preflight_warnings(self, sweep: Sweep) -> list[str]:
        """Settings that work but probably not as meant, one line each (`plan` and `submit` print them)."""
        ...

    def images(self, sweep: Sweep) -> list[tuple[str, str]]:
        """(setting, image reference) for each container image the sweep's jobs would run (none: no container);
        `launcher.images` checks which code each holds before a submit."""
        ...

    def render(self, sweep: Sweep, specs: Sequence[RunSpec]) -> dict[str, str]:
        """The exact artifacts that would be submitted (file name -> text), for `plan --render`. No network."""
        ...

    def submit(self, sweep: Sweep, specs: Sequence[RunSpec], on_job: Callable[[Job], None] | None = None) -> list[Job]:
        """Submit these runs (none of which is pending or running); return one Job per run. `on_job` gets each job
        as soon as it exists, before the next submission, so a submit that fails part-way leaves every job it made
        recorded (and none is submitted twice)."""
        ...

    def status(self, jobs: Sequence[Job]) -> dict[str, JobState]:
        """Job id -> state, as the backend sees it now; BackendUnavailable when it cannot be asked."""
        ...

    def cancel(self, jobs: Sequence[Job]) -> None: ...

    def pull(self, job: Job, run_dir: Path) -> list[Path]:
        """Copy what the job wrote into `run_dir` where it did not write there itself; the files written ([] for a
        backend whose jobs write to the shared run directory)."""
        ...

    def logs(self, target: LogTarget, follow: bool, tail: int | None, out: IO[str], poll: float) -> int:
        """Print the newest attempt of the run's job (the last `tail` lines; -1/None: all) to `out`, after a line per
        earlier attempt; with `follow`, go on until the job has ended (Ctrl-C stops following, never the job)."""
        ...
