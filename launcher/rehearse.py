"""`python -m launcher rehearse SWEEP`: every run of the real sweep, at toy scale, with its real topology.

What stays as the sweep says: nodes, ranks per node (world size), DeepSpeed stage and offload, per-device batch,
gradient accumulation (effective batch), precision, encodings, seed, do_train/do_predict. What shrinks: the model
(`tiny`, a random T5 built from the data), the data (the embedded dataset), the steps (a few, a checkpoint every
two). Every rank runs on CPU (gloo); several nodes are several torch.distributed.run agents on this machine.

Each run is started, stopped with SIGTERM once a checkpoint is complete (the trainer saves and exits 75; under
torch.distributed.run the agent forwards the signal and exits 1, the run directory says "preempted"), started again,
and must resume from that checkpoint, finish, and write one complete predictions file. One line per run; the exit
code is 1 if any run fails a check. Runs go to RUNS_ROOT/<sweep>/<run id of the real run>, away from real runs.

With `--backend slurm` each run is submitted by the real SLURM backend instead (the sweep's partition, account,
container, GPUs per node, one task per node) and preempted the way a cluster does it: USR2 to the job's steps once a
checkpoint is complete, after which submitit requeues the job and it must resume. The checks are the same.
`slurm` (from `--partition`, `--account`, `--qos`) replaces those settings of the sweep for the rehearsal, so a sweep
written for a GPU cluster's partition can be rehearsed on any cluster (e.g. the CI one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from submitit.core.utils import FailedJobError

from launcher.backends.base import Job, RunSpec
from launcher.backends.local import LOG as LOCAL_LOG
from launcher.backends.local import LocalBackend, start_agents
from launcher.backends.slurm import SlurmBackend, SubmitFailed, map_state
from launcher.sweep import PlannedRun, Sweep
from launcher.topology import Topology
from ni.io import atomic_open
from ni.run_layout import METRICS_FILE, PREDICTIONS_FILE, RunLayout
from ni.synthetic import ensure_default_data
from trainer.config import RunConfig, apply_overrides, validate_config
from trainer.hf import resolve_model_path
from trainer.rundir import EXIT_PREEMPTED

STEPS = 4
TOY = {
    "model.name_or_path": "tiny", "model.tokenizer": None, "data.root": None, "data.track": "default",
    "data.max_instances_per_task": 8, "data.max_instances_per_eval_task": 2, "data.max_dev_instances_per_task": 2,
    "data.task_limit": None, "data.max_source_length": 128, "data.max_target_length": 16,
    "optim.max_steps": STEPS, "optim.warmup_steps": 0,
    "checkpoint.every_steps": 2, "checkpoint.keep_last": 2, "checkpoint.dir": None,
    "eval.every_steps": None, "eval.dense_until": 0, "eval.dense_every": 0, "eval.batch_size": 4,
    "eval.max_new_tokens": 4, "logging.progress": False, "logging.wandb": False, "logging.tensorboard": False,
    "logging.every_steps": 1,
}
STEP_DELAY_S = "1.5"  # the first attempt's pace, so the stop lands after a checkpoint and before the end


def toy_config(cfg: RunConfig, source: str) -> RunConfig:
    """The run's config at toy scale: its topology and recipe kept, model/data/steps shrunk (see TOY)."""
    baseline = cfg.model.name_or_path.startswith("baseline:")  # a baseline stays itself, on the embedded data
    overrides = [f"{k}={orjson.dumps(v).decode()}" for k, v in TOY.items() if not (baseline and k.startswith("model."))]
    return validate_config(apply_overrides(cfg.model_dump(mode="json"), overrides, source), source)


@dataclass
class Result:
    run: PlannedRun
    ok: bool = True
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.ok = False
        self.notes.append(why)

    def line(self) -> str:
        f = self.facts
        parts = [self.run.run_id, "ok  " if self.ok else "FAIL",
                 f"world {f.get('world_size', '?')}/{self.run.resources.world_size}",
                 f"nodes {self.run.resources.nodes}x{self.run.resources.ranks_per_node}",
                 f"zero {self.run.config.deepspeed.stage}{'+offload' if self.run.config.deepspeed.offload else ''}",
                 f"eff.batch {f.get('effective_batch', '?')}", f"steps {f.get('steps', '?')}",
                 f"resume {f.get('resume', 'no')}", f"predictions {f.get('predictions', 'none')}",
                 f"{f.get('seconds', 0):.0f}s"]
        varied = " ".join(f"{k}={v}" for k, v in self.run.varied.items())
        return "  ".join(parts) + (f"  [{varied}]" if varied else "") + "".join(f"\n    {n}" for n in self.notes)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _layout(spec: RunSpec) -> RunLayout:
    return RunLayout(spec.run_dir, spec.run.config.checkpoint.dir)


def _checkpoint_complete(spec: RunSpec) -> bool:
    return _layout(spec).latest_checkpoint() is not None


def _tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n      ".join(lines[-n:])


class LocalRehearsal:
    """Runs a rehearsal run on this machine with the local backend's launch (one agent per node)."""

    def __init__(self, sweep: Sweep, timeout_s: float):
        self.sweep, self.timeout_s, self.local = sweep, timeout_s, LocalBackend()

    def start(self, spec: RunSpec, delay: str | None) -> list[subprocess.Popen[bytes]]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
        if delay:
            env["TK_DEBUG_STEP_DELAY"] = delay
        nodes = spec.run.resources.nodes
        with open(spec.run_dir / LOCAL_LOG, "ab") as log:
            return start_agents(self.local.commands(self.sweep, spec, []), [env] * nodes, log)

    def wait(self, procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[int | None]:
        deadline = time.time() + timeout
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(1.0, deadline - time.time()))
        return [p.poll() for p in procs]

    def stop(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        os.killpg(procs[0].pid, signal.SIGTERM)

    def kill(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            if p.poll() is None:
                os.killpg(procs[0].pid, signal.SIGKILL)
                break

    def rehearse(self, spec: RunSpec, result: Result) -> None:
        run_dir = spec.run_dir
        topo = Topology.of(spec.run.resources)
        # 1st attempt, slowed down: stopped by SIGTERM as soon as a checkpoint is complete
        procs = self.start(spec, STEP_DELAY_S if spec.run.config.do_train else None)
        deadline = time.time() + self.timeout_s
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if spec.run.config.do_train and _checkpoint_complete(spec):
                self.stop(procs)
                break
            time.sleep(0.3)
        codes = self.wait(procs, max(60.0, deadline - time.time()))
        if None in codes:
            self.kill(procs)
            result.fail(f"first attempt did not end in time; log:\n      {_tail(run_dir / LOCAL_LOG)}")
            return
        status = _layout(spec).status()
        if spec.run.config.do_train:
            want = EXIT_PREEMPTED if not topo.distributed else 1  # torch.distributed.run exits 1 once it forwarded a signal
            if status.get("state") != "preempted" or codes[0] != want:
                result.fail(f"stop after a checkpoint: exit {codes}, state {status.get('state')!r} (want exit {want}, "
                            f"'preempted'); log:\n      {_tail(run_dir / LOCAL_LOG)}")
                return
            result.facts["stopped_at"] = status.get("step")
        # 2nd attempt: must resume and finish
        procs = self.start(spec, None)
        codes = self.wait(procs, self.timeout_s)
        if None in codes:
            self.kill(procs)
        if codes != [0] * len(codes):
            result.fail(f"second attempt: exit {codes}; log:\n      {_tail(run_dir / LOCAL_LOG)}")


class SlurmRehearsal:
    """Submits a rehearsal run through the SLURM backend and preempts it once a checkpoint is complete."""

    def __init__(self, sweep: Sweep, timeout_s: float, cluster: dict[str, str] | None = None):
        self.backend, self.timeout_s = SlurmBackend(), timeout_s
        self.backend.check(sweep)
        slurm = sweep.spec.backend.slurm.model_copy(update=cluster or {})
        # every attempt is slowed down (the job script is the same after a requeue): the preemption must land
        # between the first complete checkpoint and the end
        slowed = slurm.model_copy(update={"setup": [*slurm.setup, f"export TK_DEBUG_STEP_DELAY={STEP_DELAY_S}"]})
        spec = sweep.spec.model_copy(update={"backend": sweep.spec.backend.model_copy(update={"slurm": slowed})})
        self.sweep = Sweep(sweep.path, spec, sweep.runs)

    def log(self, spec: RunSpec, job: Job) -> str:
        return "\n      ".join(f"{p.name}: {_tail(p)}" for p in sorted(
            (spec.run_dir.parent / ".submitit").glob(f"{job.job_id}_*_log.err")))

    def wait(self, job: Job, deadline: float, until: Callable[[str], bool] = lambda state: False) -> str:
        """The job's SLURM state word once `until(state)` holds, it has ended, or the deadline passed ('' if gone)."""
        state = ""
        while time.time() < deadline:
            state = _squeue_state(job.job_id)
            if until(state) or not state or map_state(state) in ("completed", "failed", "cancelled"):
                return state
            time.sleep(0.5)
        return state

    def rehearse(self, spec: RunSpec, result: Result) -> None:
        try:
            (job,) = self.backend.submit(self.sweep, [spec])
        except (FailedJobError, SubmitFailed) as e:  # sbatch's own words, e.g. "invalid partition specified: gpu"
            words = e.args[0] if isinstance(e, SubmitFailed) else str(e)  # without the launcher's fix-it hint
            result.fail(f"sbatch refused the job: {' '.join(words.split())}")
            return
        result.facts["job"] = job.job_id
        deadline = time.time() + self.timeout_s
        if spec.run.config.do_train:
            state = self.wait(job, deadline, until=lambda _: _checkpoint_complete(spec))
            if not _checkpoint_complete(spec):
                self.backend.cancel([job])
                result.fail(f"job {job.job_id}: no complete checkpoint (state {state or 'out of sight'}); "
                            f"log:\n      {self.log(spec, job)}")
                return
            subprocess.run(["scancel", "--signal=USR2", job.job_id], capture_output=True, timeout=60, check=False)
            state = self.wait(job, deadline, until=lambda state: state == "PENDING")
            if state != "PENDING":
                self.backend.cancel([job])
                result.fail(f"job {job.job_id}: not requeued after USR2 (state {state or 'out of sight'}); "
                            f"log:\n      {self.log(spec, job)}")
                return
            result.facts["stopped_at"] = _layout(spec).read_status().step
            # SLURM holds a requeued job back ~2 minutes; at once would race the revocation of the old attempt's
            # credential ("Job credential revoked" ends the job FAILED), so a few seconds on
            subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now+5"], capture_output=True,
                           timeout=60, check=False)
        state = self.wait(job, time.time() + self.timeout_s)
        if state != "COMPLETED":
            self.backend.cancel([job])
            result.fail(f"job {job.job_id}: {state or 'out of sight'} at the end, not COMPLETED; "
                        f"log:\n      {self.log(spec, job)}")


def _squeue_state(job_id: str, tries: int = 3) -> str:
    """SLURM's state word for a job (PENDING, RUNNING, REQUEUED, COMPLETED...), '' once squeue has forgotten it
    (asked again first: a busy slurmctld answers nothing too)."""
    for attempt in range(tries):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            state = subprocess.run(["squeue", "--states=all", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                                   text=True, timeout=60).stdout.strip()
            if state:
                return state
        time.sleep(2 if attempt + 1 < tries else 0)
    return ""


def check_run(spec: RunSpec, result: Result) -> None:
    """What the run directory must show after the rehearsal: the planned world size, a resume, a full finish."""
    run, run_dir = spec.run, spec.run_dir
    layout = _layout(spec)
    read = layout.read_status()
    status = read.record
    cfg = run.config
    world = status.get("world_size")
    result.facts["world_size"] = world
    if world != run.resources.world_size:
        result.fail(f"the trainer saw world size {world}, the sweep plans {run.resources.world_size}")
    accum = status.get("grad_accum", cfg.optim.grad_accum)
    per_device = status.get("per_device_batch_size", cfg.optim.per_device_batch_size)
    result.facts["effective_batch"] = status.get("effective_batch_size", per_device * (world or 0) * accum)
    if status.get("state") != "completed" or not read.done:
        result.fail(f"state {status.get('state')!r}{': ' + read.error if read.error else ''}")
    records = layout.train_log()
    if cfg.do_train:
        steps = [r["step"] for r in records if "loss" in r and "step" in r]
        result.facts["steps"] = max(steps, default=0)
        if result.facts["steps"] != STEPS:
            result.fail(f"trained {result.facts['steps']} steps, want {STEPS}")
        if read.total_steps != STEPS:
            result.fail(f"status.json says total_steps {read.total_steps}, want {STEPS}")
        resumed = [r for r in records if r.get("event") == "resumed"]
        if resumed:
            result.facts["resume"] = f"ok@{resumed[0].get('step')}"
        else:
            result.fail("the second attempt did not resume from the checkpoint (no 'resumed' in train_log.jsonl)")
    else:
        result.facts["steps"], result.facts["resume"] = 0, "n/a"
    if cfg.do_predict:
        metrics = _read_json(run_dir / METRICS_FILE)
        path = run_dir / PREDICTIONS_FILE
        rows = [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.is_file() else []
        ids = {r.get("id") for r in rows}
        n = metrics.get("num_examples")
        result.facts["predictions"] = f"{len(rows)}/{n}" + (" complete" if rows and len(ids) == len(rows) == n else "")
        if not (rows and len(ids) == len(rows) == n):
            result.fail(f"predictions: {len(rows)} rows, {len(ids)} distinct ids, metrics say {n}")


def prepare(sweep: Sweep, root: Path, limit: int | None) -> list[RunSpec]:
    specs = []
    for run in sweep.runs[:limit] if limit else sweep.runs:
        run_dir = root / sweep.name / run.run_id
        toy = toy_config(run.config, f"{sweep.path} (rehearsal of {run.run_id})")
        toy = toy.model_copy(update={"output_dir": str(run_dir.resolve())})
        rehearsed = PlannedRun(run.run_id, run.varied, toy, run.resources, run.variant)
        if run_dir.exists():  # a rehearsal starts afresh
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        spec = RunSpec(rehearsed, run_dir, run_dir / "launch.yaml")
        with atomic_open(spec.config_path) as fh:
            fh.write(toy.to_yaml())
        specs.append(spec)
    return specs


def rehearse(sweep: Sweep, root: Path, limit: int | None = None, timeout_s: float = 900, backend: str = "local",
             slurm: dict[str, str] | None = None) -> int:
    runner: SlurmRehearsal | LocalRehearsal
    if backend == "slurm":
        runner = SlurmRehearsal(sweep, timeout_s, slurm)
    else:
        runner = LocalRehearsal(sweep, timeout_s)
    specs = prepare(sweep, root, limit)
    where = "CPU/gloo"
    if backend == "slurm":
        where = "on SLURM" + "".join(f", {k} {v}" for k, v in (slurm or {}).items())
    print(f"{sweep.name}: rehearsing {len(specs)} of {len(sweep.runs)} runs (tiny model, embedded data, {STEPS} steps, "
          f"{where}) in {root / sweep.name}", flush=True)
    _build_tiny_model()
    results = []
    for spec in specs:
        result = Result(spec.run)
        t0 = time.time()
        runner.rehearse(spec, result)
        if result.ok:  # a failed attempt already says why, with its log; the run directory would only repeat it
            check_run(spec, result)
        result.facts["seconds"] = time.time() - t0
        print(result.line(), flush=True)
        results.append(result)
    failed = [r for r in results if not r.ok]
    print(f"{sweep.name}: {len(results) - len(failed)} of {len(results)} runs rehearsed ok"
          + (f"; failed: {', '.join(r.run.run_id for r in failed)}" if failed else ""))
    return 1 if failed else 0


def _build_tiny_model() -> None:
    """Once, before any rank: every rank of every run then loads the same cached tiny model."""
    resolve_model_path("tiny", str(ensure_default_data()))
