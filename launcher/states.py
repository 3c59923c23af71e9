"""What each run of a sweep is now: the job states its backends report, joined with its run directory by the
manifest. Used by the CLI (status, submit, wait)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from launcher import backends
from launcher.backends.base import BackendUnavailable, Job, JobState
from launcher.manifest import Manifest, RunState
from launcher.sweep import Sweep
from ni.errors import ConfigError


def job_states(sweep: Sweep, manifest: Manifest, unreachable: set[str] | None = None) -> dict[str, JobState]:
    """Every job id the manifest keeps (an older one may still run) -> its state as the backend sees it. Backends
    that cannot be asked are added to `unreachable`."""
    by_backend: dict[str, list[Job]] = {}
    for run in sweep.runs:
        backend = manifest.backend_of(run.run_id)
        if backend:
            by_backend.setdefault(backend, []).extend(manifest.jobs(run.run_id))
    states: dict[str, JobState] = {}
    for name, jobs in by_backend.items():
        if not jobs:
            continue
        try:
            states.update(backends.get_backend(name).status(jobs))
        except (OSError, ConfigError, BackendUnavailable) as e:  # unknown is not missing: such runs are never submitted again
            print(f"warning: {name} status unavailable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                  "runs not finished in their run directories are 'unknown'", file=sys.stderr)
            if unreachable is not None:
                unreachable.add(name)
    return states


def run_job_state(jobs: Sequence[Job], job_states: dict[str, JobState]) -> JobState | None:
    """A run's job state: an active job's if any job is active (running first), else the newest job's."""
    states = [job_states.get(j.job_id) for j in jobs]
    for active in ("running", "pending"):
        if active in states:
            return active
    return states[-1] if states else None


def sweep_states(sweep: Sweep, manifest: Manifest) -> list[RunState]:
    unreachable: set[str] = set()
    by_job = job_states(sweep, manifest, unreachable)
    out = []
    for run in sweep.runs:
        state = manifest.state(run, run_job_state(manifest.jobs(run.run_id), by_job))
        backend = manifest.backend_of(run.run_id)
        if backend in unreachable and state.state not in ("completed", "running"):
            state = RunState(run.run_id, "unknown", f"controller unreachable: {backend} could not be asked")
        out.append(state)
    return out
