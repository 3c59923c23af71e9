"""The sweep manifest (`runs/<sweep>/manifest.json`) and the rules that make re-submission safe.

Ground truth for a run is its own directory (`DONE`, `status.json`); the backend's view of the newest job
comes second. So: completed runs are skipped, pending or running ones are never duplicated, failed, cancelled or
lost ones are submitted again. The manifest is rewritten (atomically) after every submission, so a failure in the
middle of a submission leaves a manifest that the next `submit` completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from launcher.backends.base import Job, JobState, RunSpec
from launcher.sweep import PlannedRun, Sweep
from ni.errors import ConfigError
from ni.io import atomic_open, now, write_json
from ni.locks import FileLock, describe
from ni.run_layout import RunLayout, RunStatus

ACTIVE: tuple[JobState, ...] = ("pending", "running")
SWEEP_LOCK_FILE = "sweep.lock"  # runs/<sweep>/sweep.lock: held by whoever decides what to submit or cancel


@dataclass
class RunState:
    run_id: str
    state: str  # completed | running | pending | failed | preempted | cancelled | missing | new | unknown
    detail: str = ""


class Manifest:
    def __init__(self, root: Path, sweep: Sweep):
        self.sweep = sweep
        self.dir = root / sweep.name
        self.path = self.dir / "manifest.json"
        self.data: dict[str, Any] = _read(self.path) if self.path.exists() else {"sweep": sweep.name, "runs": {}}
        self.data["sweep_file"] = str(sweep.path)

    def lock(self, what: str) -> FileLock:
        """The sweep's lock: whoever decides what to submit or cancel holds it (`runs/<sweep>/sweep.lock`)."""
        return FileLock(self.dir / SWEEP_LOCK_FILE, what)

    # -- runs -----------------------------------------------------------------------------------------

    def run_dir(self, run: PlannedRun) -> Path:
        return self.dir / run.run_id

    def spec(self, run: PlannedRun) -> RunSpec:
        return RunSpec(run, self.run_dir(run), self.run_dir(run) / "launch.yaml")

    def write_launch_config(self, run: PlannedRun) -> RunSpec:
        """The resolved config a job runs: the run's config with `output_dir` = its run directory."""
        spec = self.spec(run)
        cfg = run.config.model_copy(update={"output_dir": str(spec.run_dir.resolve())})
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(spec.config_path) as fh:
            fh.write(f"# written by the launcher for sweep {self.sweep.name}, run {run.run_id}\n")
            fh.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return spec

    def jobs(self, run_id: str) -> list[Job]:
        entry = self.data["runs"].get(run_id, {})
        return [Job(run_id, j) for j in entry.get("jobs", [])]

    def backend_of(self, run_id: str) -> str | None:
        backend = self.data["runs"].get(run_id, {}).get("backend")
        return backend if isinstance(backend, str) else None

    def record(self, run: PlannedRun, backend: str, job: Job) -> None:
        entry = self.data["runs"].setdefault(run.run_id, {"submitted_at": now()})
        entry.update(varied=run.varied, backend=backend, updated_at=now())
        entry.setdefault("jobs", []).append(job.job_id)
        self.save()

    def mark_cancelled(self, run_id: str, jobs: Sequence[Job]) -> None:
        """Jobs the launcher cancelled. SLURM keeps no record of an array task cancelled before it started (it
        leaves the pending array without a trace), so only this tells such a run from a lost one."""
        entry = self.data["runs"].get(run_id)
        if entry is None:
            return
        done = entry.setdefault("cancelled", [])
        done += [j.job_id for j in jobs if j.job_id not in done]
        self.save()

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)

    # -- state ----------------------------------------------------------------------------------------

    def state(self, run: PlannedRun, job_state: JobState | None) -> RunState:
        """Combine the run directory (ground truth) with the backend's view of the run's jobs (`job_state`: an
        active one if any is, else the newest). A run directory a live process holds is running, whatever the
        manifest says (a manifest deleted or written by a crashed launcher, an orphaned trainer)."""
        layout = RunLayout(self.run_dir(run))
        status = layout.read_status()
        if status.done:
            return RunState(run.run_id, "completed")
        holder = layout.holder()
        if holder is not None and job_state not in ACTIVE:
            return RunState(run.run_id, "running", f"held by {describe(holder)}")
        if job_state in ACTIVE:
            return RunState(run.run_id, job_state or "pending", f"step {layout.last_step()}" if job_state == "running" else "")
        if not self.jobs(run.run_id):
            return RunState(run.run_id, "new")
        if job_state == "completed":  # e.g. a Beaker result not pulled yet: never run it again
            return RunState(run.run_id, "completed", "results not pulled yet")
        if job_state == "cancelled":  # scancel: the trainer saved and wrote "preempted", but a person cancelled it
            return _cancelled(run.run_id, layout, status)
        if status.state == "failed":
            return RunState(run.run_id, "failed", status.error[:200])
        if job_state in (None, "unknown") and self._cancelled_here(run.run_id):  # the backend forgot it; we did not
            return _cancelled(run.run_id, layout, status)
        if status.state == "preempted":
            return RunState(run.run_id, "preempted", status.error[:200])
        if job_state in ("failed", "cancelled", "preempted"):
            return RunState(run.run_id, job_state)
        return RunState(run.run_id, "missing", "the backend has no live job and the run did not finish")

    def _cancelled_here(self, run_id: str) -> bool:
        """The run's newest job is one `launcher cancel` cancelled."""
        entry = self.data["runs"].get(run_id, {})
        jobs = entry.get("jobs", [])
        return bool(jobs) and jobs[-1] in entry.get("cancelled", [])

    def to_submit(self, states: Sequence[RunState]) -> list[str]:
        return [s.run_id for s in states if s.state in ("new", "failed", "preempted", "cancelled", "missing")]


def _read(path: Path) -> dict[str, Any]:
    """manifest.json, checked for shape: {"runs": {run id: {"backend": str, "jobs": [str, ...]}}}."""
    hint = ("It only records job ids; the run directories hold the results. Move it aside "
            f"(mv {path} {path}.bad) and submit again: live runs are found by their run directories.")
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})", hint=hint) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a manifest file", hint=hint) from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict):
        raise ConfigError(f"{path}: 'runs' must be a mapping of run id to its jobs", hint=hint)
    for run_id, entry in runs.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("jobs", []), list)
                and all(isinstance(j, str) for j in entry.get("jobs", []))
                and isinstance(entry.get("cancelled", []), list)
                and isinstance(entry.get("backend", ""), str)):
            raise ConfigError(f"{path}: runs.{run_id}: expected {{backend: str, jobs: [str, ...], cancelled: [str, ...]}}",
                              hint=hint)
    return data


def _cancelled(run_id: str, layout: RunLayout, status: RunStatus) -> RunState:
    step = layout.last_step()
    return RunState(run_id, "cancelled", f"step {step}" if step else ("" if status.record else "cancelled before it started"))
