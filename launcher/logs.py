"""`python -m launcher logs SWEEP [RUN_ID] [--follow] [--tail N]`: a run's logs, whatever the backend ran it.

With RUN_ID: the logs as the backend that ran the run keeps them (`Backend.logs`: the local `launcher.log`,
SLURM's submitit files, Beaker's job logs), the newest attempt after one line per restart.

Without RUN_ID: a one-screen summary of the sweep (`launcher.progress`), refreshed in place with `--follow`.

Following never touches a job: Ctrl-C stops following, the job runs on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from launcher import backends
from launcher.backends.base import LogTarget
from launcher.manifest import Manifest
from launcher.progress import summary
from launcher.sweep import PlannedRun, Sweep
from ni.errors import ConfigError


def find_run(sweep: Sweep, run_id: str) -> PlannedRun:
    matches = [r for r in sweep.runs if r.run_id == run_id or r.run_id.startswith(run_id)]
    if len(matches) != 1:
        ids = ", ".join(r.run_id for r in sweep.runs[:12]) + (" ..." if len(sweep.runs) > 12 else "")
        what = "matches several runs" if matches else "is not a run of this sweep"
        raise ConfigError(f"{sweep.path}: '{run_id}' {what}", hint=f"Run ids: {ids}")
    return matches[0]


def logs(sweep: Sweep, runs_root: Path, run_id: str | None, follow: bool = False, tail: int | None = 100,
         interval: float = 5.0, out: IO[str] | None = None) -> int:
    """A run's logs, as the backend that ran it keeps them (`Backend.logs`); without a run id, the summary."""
    manifest = Manifest(runs_root, sweep)
    try:
        if run_id is None:
            return summary(sweep, manifest, follow, interval)
        run = find_run(sweep, run_id)
        target = LogTarget(sweep, run, manifest.run_dir(run), manifest.dir, manifest.jobs(run.run_id))
        backend = backends.get_backend(manifest.backend_of(run.run_id) or "local")  # never submitted: its local log
        return backend.logs(target, follow, tail, out or sys.stdout, min(interval, 0.5))
    except KeyboardInterrupt:
        print("\nstopped following (the job keeps running)", file=sys.stderr)
        return 0
