"""An in-process FAKE Beaker for tests: no Beaker server is reachable here, so this stands in for one.

`FakeBeakerClient` implements `BeakerClientLike` (launcher.backends.beaker) and hands back REAL beaker-py 2.x
objects: the protobuf `Workload`/`Experiment`/`Task`, `Job` with its `JobStatus` (status, exit code,
cancelation code, timestamps, replica group details, result dataset id) and `DatasetFile`. Each created
experiment plays a scripted outcome, chosen per run id (the task name):

    succeed                 one job, exit 0; its result dataset holds the run directory
    fail                    one job, exit 1; status.json says failed
    preempt                 one job canceled by system preemption
    preempt-then-succeed    a preempted job, then the resumed job that succeeds (the newest decides)
    running, queued         one unfinished job

Every job gets its own, fresh result dataset, as on Beaker: a job resumed after a preemption starts with an empty
/results. Weka buckets (`weka`: bucket -> path -> bytes) outlive every job. When a task mounts one and its run
config checkpoints there (`checkpoint.dir`, see `backend.beaker.checkpoint_weka`), each job plays the trainer's
run-directory side for real through `trainer.rundir.RunDir` (claim, resume from the newest complete checkpoint,
log restore, checkpoint, prune) on a fresh /results and the persistent bucket: `STEPS_PER_JOB` steps per job, up
to `TOTAL_STEPS`. The rest of the result files are the scripted ones.

The specs it receives are kept (`created`) as beaker-py `BeakerExperimentSpec`s and as their JSON, so tests can
check exactly what would have been sent.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from beaker import (
    BeakerCancelationCode,
    BeakerExperimentSpec,
    BeakerJob,
    BeakerJobLog,
    BeakerTaskSpec,
    BeakerWorkload,
    BeakerWorkloadStatus,
)
from beaker import beaker_pb2 as pb2
from beaker.types import BeakerDatasetFile

from ni.run_layout import (
    CONFIG_FILE,
    DONE_FILE,
    LOG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    STATUS_FILE,
    trainer_state,
)
from trainer.config import RunConfig, validate_config
from trainer.rundir import RunDir

Outcome = Literal["succeed", "fail", "preempt", "preempt-then-succeed", "running", "queued"]

T0 = 1_700_000_000  # fixed clock: job timestamps are deterministic
STEPS_PER_JOB = 10  # a job that does not complete gets this far before it ends
TOTAL_STEPS = 20


@dataclass
class CreatedExperiment:
    workload_id: str
    name: str
    workspace: str
    spec: BeakerExperimentSpec
    spec_json: str


def default_results(run_id: str, config_yaml: str, state: str) -> dict[str, bytes]:
    """What the trainer leaves in /results for a final `state` (completed, failed or preempted)."""
    status: dict[str, object] = {"state": state, "started_at": "2024-01-01T00:00:00+0000", "updated_at": "2024-01-01T01:00:00+0000"}
    files = {CONFIG_FILE: config_yaml.encode(), LOG_FILE: b'{"step": 10, "loss": 1.5}\n'}
    if state == "failed":
        status["error"] = "RuntimeError: CUDA out of memory"
    if state == "preempted":
        status["step"] = 10
    if state == "completed":
        rows = [
            {"Task": "task001_fake", "Definition": ["Answer."], "id": f"task001-{i}",
             "Instance": {"id": f"task001-{i}", "input": f"q{i}", "output": [f"a{i}"]}, "prediction": f"a{i}"}
            for i in range(3)
        ]
        files[PREDICTIONS_FILE] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
        metrics = {"overall": {"exact_match": 100.0, "rougeL": 100.0}, "num_examples": len(rows), "run_id": run_id}
        files[METRICS_FILE] = json.dumps(metrics, indent=2).encode()
        files[DONE_FILE] = b"2024-01-01T01:00:00+0000\n"
    files[STATUS_FILE] = json.dumps(status).encode()
    return files


def _unpack(files: dict[str, bytes], root: Path) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _pack(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def weka_checkpoints(task: BeakerTaskSpec, config_yaml: str) -> tuple[RunConfig, str, str] | None:
    """(run config, bucket, checkpoint path inside it) when the task checkpoints to a mounted Weka bucket."""
    cfg = validate_config(yaml.safe_load(config_yaml) or {}, "TK_RUN_CONFIG") if config_yaml else None
    if cfg is None or not cfg.do_train or not cfg.checkpoint.dir:
        return None
    for mount in task.datasets or []:
        root = mount.mount_path.rstrip("/") + "/"
        if mount.source.weka and cfg.checkpoint.dir.startswith(root):
            return cfg, mount.source.weka, cfg.checkpoint.dir.removeprefix(root)
    return None


def play_trainer(run: RunDir, cfg: RunConfig, state: str) -> None:
    """One job of the trainer, as far as the run directory and the checkpoints go (no model)."""
    run.claim(cfg, force=False)
    latest = run.latest_checkpoint()
    step = trainer_state(latest)["step"] if latest else 0
    if latest is not None:
        run.log({"event": "resumed", "step": step, "checkpoint": latest.name})
    end = TOTAL_STEPS if state == "completed" else min(step + STEPS_PER_JOB, TOTAL_STEPS)
    for s in range(step + 1, end + 1):
        run.log({"step": s, "loss": round(2.0 - 0.05 * s, 4)})
    if state in ("completed", "preempted"):  # preempted: the trainer saved on SIGTERM; completed: the end state
        target = run.checkpoint_dir(end)
        target.mkdir(parents=True, exist_ok=True)
        run.complete_checkpoint(target, {"step": end, "total_steps": TOTAL_STEPS})
        run.prune_checkpoints(cfg.checkpoint.keep_last)


class FakeBeakerClient:
    """A scripted stand-in for Beaker (see the module docstring)."""

    def __init__(self, outcomes: dict[str, Outcome] | None = None, default: Outcome = "succeed",
                 results: dict[str, dict[str, bytes]] | None = None,
                 log_lines: dict[str, list[bytes]] | None = None):
        self.outcomes = dict(outcomes or {})
        self.default = default
        self.results_override = dict(results or {})  # run id -> files of its successful result dataset
        self.created: list[CreatedExperiment] = []
        self.cancelled: list[str] = []
        self.log_lines = dict(log_lines or {})  # job id -> its scripted log messages (default: one per job)
        self.log_requests: list[tuple[str, bool, int | None]] = []  # (job id, follow, tail_lines)
        self._workloads: dict[str, BeakerWorkload] = {}
        self._jobs: dict[str, list[BeakerJob]] = {}
        self._datasets: dict[str, dict[str, bytes]] = {}
        self.weka: dict[str, dict[str, bytes]] = {}  # bucket -> path -> bytes; outlives every job
        self._n = 0

    # -- BeakerClientLike ----------------------------------------------------------------------------

    def create_experiment(self, spec: BeakerExperimentSpec, name: str, workspace: str) -> BeakerWorkload:
        if any(c.name == name for c in self.created):
            raise ValueError(f"experiment '{name}' already exists")  # what Beaker's 409 conflict means
        spec_dict = spec.to_json()
        self._n += 1
        wid = f"01FAKEEXP{self._n:04d}"
        tasks = [pb2.Task(id=f"{wid}-T{i}", experiment_id=wid, name=t.name or f"task{i}")
                 for i, t in enumerate(spec.tasks)]
        workload = BeakerWorkload(
            experiment=pb2.Experiment(id=wid, name=name, workspace_id=workspace, tasks=tasks,
                                      description=spec.description or "", created={"seconds": T0 + self._n}),
            status=BeakerWorkloadStatus.submitted.as_pb2(),
        )
        self._workloads[wid] = workload
        self.created.append(CreatedExperiment(wid, name, workspace, spec,
                                              json.dumps(spec_dict, sort_keys=True, indent=2)))
        run_id = spec.tasks[0].name or ""
        self._play(wid, self.outcomes.get(run_id, self.default))
        out = BeakerWorkload()
        out.CopyFrom(workload)
        return out

    def list_jobs(self, workload_id: str) -> list[BeakerJob]:
        if workload_id not in self._workloads:
            raise KeyError(f"workload '{workload_id}' not found")
        return [_copy(j) for j in self._jobs[workload_id]]

    def get_job(self, job_id: str) -> BeakerJob:
        for jobs in self._jobs.values():
            for j in jobs:
                if j.id == job_id:
                    return _copy(j)
        raise KeyError(f"job '{job_id}' not found")

    def list_result_files(self, job: BeakerJob) -> list[BeakerDatasetFile]:
        files = self._datasets.get(job.assignment_details.result_dataset_id, {})
        return [
            BeakerDatasetFile(path=p, size=len(b), updated={"seconds": T0},
                              digest={"algorithm": pb2.DatasetFile.ALGORITHM_TYPE_SHA256,
                                      "value": hashlib.sha256(b).digest()})
            for p, b in sorted(files.items())
        ]

    def stream_result_file(self, job: BeakerJob, path: str) -> Iterable[bytes]:
        data = self._datasets[job.assignment_details.result_dataset_id][path]
        for i in range(0, max(len(data), 1), 7):  # small chunks, like a real stream
            yield data[i:i + 7]

    def cancel_workload(self, workload_id: str) -> None:
        self.cancelled.append(workload_id)
        for j in self._jobs.get(workload_id, []):
            if not j.status.HasField("finalized"):
                _finish(j, BeakerWorkloadStatus.canceled, canceled_code=BeakerCancelationCode.manual)

    def logs(self, job: BeakerJob, follow: bool = False, tail_lines: int | None = None) -> Iterable[BeakerJobLog]:
        self.log_requests.append((job.id, follow, tail_lines))
        lines = self.log_lines.get(job.id, [f"job {job.id} of {job.name}: scripted log line\n".encode()])
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines else []
        for i, msg in enumerate(lines):
            yield BeakerJobLog(timestamp={"seconds": T0 + i}, message=msg)

    # -- scripting -----------------------------------------------------------------------------------

    def script(self, workload_id: str, outcome: Outcome) -> None:
        """Replace a workload's job history with another outcome (e.g. 'running' -> 'succeed')."""
        self._play(workload_id, outcome)

    def _play(self, wid: str, outcome: Outcome) -> None:
        exp = self._workloads[wid].experiment
        spec = next(c.spec for c in self.created if c.workload_id == wid)
        task_spec, task = spec.tasks[0], exp.tasks[0]
        run_id = task_spec.name or ""
        config = next((e.value or "" for e in task_spec.env_vars or [] if e.name == "TK_RUN_CONFIG"), "")
        replicas = task_spec.replicas or 1
        jobs: list[BeakerJob] = []

        def attempt(n: int, state: str) -> list[BeakerJob]:
            group = f"{wid}-G{n}" if replicas > 1 else ""
            out = []
            for rank in range(replicas):
                jid = f"{wid}-J{n}R{rank}"
                ds = f"{jid}-results"
                files: dict[str, bytes] = {}
                if rank == 0:
                    files = (self.results_override[run_id] if state == "completed" and run_id in self.results_override
                             else default_results(run_id, config, state))
                    files = {**files, **self._trainer_files(task_spec, config, state)}
                self._datasets[ds] = dict(files)
                job = BeakerJob(id=jid, task_id=task.id, workload_id=wid, name=run_id,
                                status={"created": {"seconds": T0 + 100 * n + rank}},
                                assignment_details={"result_dataset_id": ds, "node_id": f"node-{n}-{rank}"})
                if replicas > 1:
                    job.system_details.replica_group_details.CopyFrom(pb2.ReplicaGroupDetails(
                        id=group, size=replicas, rank=rank, is_leader_replica=rank == 0))
                if n > 0:
                    job.retry_ancestor_id = jobs[0].id
                out.append(job)
            return out

        def finished(n: int, state: str, **kw: object) -> list[BeakerJob]:
            js = attempt(n, state)
            for j in js:
                _finish(j, **kw)  # type: ignore[arg-type]
            return js

        ok = {"status": BeakerWorkloadStatus.succeeded, "exit_code": 0}
        preempted = {"status": BeakerWorkloadStatus.canceled, "canceled_code": BeakerCancelationCode.system_preemption}
        if outcome == "succeed":
            jobs += finished(0, "completed", **ok)
        elif outcome == "fail":
            jobs += finished(0, "failed", status=BeakerWorkloadStatus.failed, exit_code=1)
        elif outcome == "preempt":
            jobs += finished(0, "preempted", **preempted)
        elif outcome == "preempt-then-succeed":
            jobs += finished(0, "preempted", **preempted)
            jobs += finished(1, "completed", **ok)
        elif outcome == "running":
            for j in attempt(0, "running"):
                j.status.status = BeakerWorkloadStatus.running.as_pb2()
                j.status.started.FromSeconds(T0 + 10)
                jobs.append(j)
        elif outcome == "queued":
            for j in attempt(0, "running"):
                j.status.status = BeakerWorkloadStatus.queued.as_pb2()
                jobs.append(j)
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
        self._jobs[wid] = jobs


    def _trainer_files(self, task_spec: BeakerTaskSpec, config: str, state: str) -> dict[str, bytes]:
        """A job that checkpoints to Weka: play the trainer on a fresh /results and the persistent bucket."""
        found = weka_checkpoints(task_spec, config) if state != "running" else None
        if found is None:
            return {}
        cfg, bucket, ckpt = found
        with tempfile.TemporaryDirectory(prefix="fake-beaker-") as tmp:
            results, store = Path(tmp) / "results", Path(tmp) / "weka"
            _unpack(self.weka.get(bucket, {}), store)
            play_trainer(RunDir(results, store / ckpt), cfg, state)
            self.weka[bucket] = _pack(store)
            files = _pack(results)
        return {k: v for k, v in files.items() if k in (LOG_FILE, CONFIG_FILE)}


def _finish(job: BeakerJob, status: BeakerWorkloadStatus, exit_code: int | None = None,
            canceled_code: BeakerCancelationCode | None = None) -> None:
    t = job.status.created.seconds
    job.status.status = status.as_pb2()
    job.status.started.FromSeconds(t + 10)
    if canceled_code is not None:
        job.status.canceled.FromSeconds(t + 50)
        job.status.canceled_code = canceled_code.as_pb2()
        job.status.canceled_for = canceled_code.name
    if exit_code is not None:
        job.status.exit_code = exit_code
        job.status.exited.FromSeconds(t + 60)
        if exit_code != 0:
            job.status.failed.FromSeconds(t + 60)
    job.status.finalized.FromSeconds(t + 70)


def _copy(job: BeakerJob) -> BeakerJob:
    out = BeakerJob()
    out.CopyFrom(job)
    return out
