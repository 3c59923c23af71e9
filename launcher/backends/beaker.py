"""Beaker backend: one Beaker experiment (spec v2, one task) per run, through beaker-py 2.x.

What a run's task does, without a shell:

    python -c <WRAPPER> /run/launch.yaml <nodes> <ranks per node> <rendezvous port>

The wrapper (a constant Python snippet) writes the run's resolved config, delivered in the env var
`TK_RUN_CONFIG`, to /run/launch.yaml and execs `launcher.topology.launch_argv` for the run's topology: the trainer,
or with world size > 1 the trainer under `torch.distributed.run` (on several nodes the node rank and the leader's
host come from the variables Beaker sets on replicas, `BEAKER_REPLICA_RANK` and `BEAKER_LEADER_REPLICA_HOSTNAME`;
the port is drawn from the run id, so all replicas agree). Every value stays one literal argv element. The config's `output_dir` is the task's result path /results, so the result
dataset of a job holds the run directory (status.json, metrics.json, predicted_examples.jsonl, DONE);
`pull()` copies it into the local run directory. NI data comes from a Beaker dataset mounted at /data when
`backend.beaker.data_dataset` is set. Secrets are referenced by their Beaker secret NAME only.

Checkpoints and preemption. A job that Beaker resumes after a preemption (`auto_resume`) or retries gets a
FRESH, empty result dataset, so checkpoints kept in /results are lost and training restarts at step 0. With
`backend.beaker.checkpoint_weka: BUCKET` the task mounts that Weka bucket (read-write) at /weka/BUCKET and the
run's config gets `checkpoint.dir = /weka/BUCKET/<checkpoint_prefix>/<sweep>/<run id>/checkpoints`: one folder per
run (the run id is a hash of the config; `checkpoint.dir` is not part of it), the same for every job of the run.
The resumed job finds the newest complete checkpoint there and continues exactly, with the earlier train_log.jsonl
restored from the checkpoint. The checkpoints stay on Weka (`pull()` never copies them); everything else is still
the result dataset. Without it, `preflight_warnings()` (shown by `plan` and `submit`) says so for preemptible sweeps
that train.

Job ids are Beaker experiment (workload) ids; a workload's jobs (a preempted job, then the resumed one) are
looked up on every `status()`, and the newest decides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

import orjson
import yaml
from beaker import (
    Beaker,
    BeakerConstraints,
    BeakerDataMount,
    BeakerDataSource,
    BeakerEnvVar,
    BeakerExperimentSpec,
    BeakerImageSource,
    BeakerJob,
    BeakerJobLog,
    BeakerJobPriority,
    BeakerResultSpec,
    BeakerRetrySpec,
    BeakerSortOrder,
    BeakerSpecVersion,
    BeakerTaskContext,
    BeakerTaskResources,
    BeakerTaskSpec,
    BeakerWorkload,
)
from beaker.common import to_lower_camel
from beaker.exceptions import BeakerConfigurationError
from beaker.types import BeakerDatasetFile

from launcher.backends import beaker_jobs
from launcher.backends.base import Job, JobState, LogTarget, RunSpec
from launcher.backends.beaker_jobs import attempt_state, current_attempt, leader
from launcher.sweep import BeakerSettings, Memory, PlannedRun, Sweep
from launcher.topology import Topology, port_from
from ni.errors import ConfigError
from ni.io import atomic_open
from ni.run_layout import CHECKPOINTS_DIR

RESULT_PATH = "/results"
DATA_PATH = "/data"
WEKA_ROOT = "/weka"  # a Weka bucket B is mounted at /weka/B, as elsewhere on Beaker
LAUNCH_PATH = "/run/launch.yaml"
CONFIG_ENV = "TK_RUN_CONFIG"
CACHE_DIR_ENV = "TK_CACHE_DIR"  # trainer.dataset's cache root

# argv: LAUNCH_PATH NNODES RANKS_PER_NODE PORT. The launch itself is launcher.topology's (installed in the image),
# the node rank and the leader's host come from Beaker's replica variables.
WRAPPER = (
    "import os, pathlib, sys\n"
    "from launcher.topology import Rendezvous, Topology, launch_argv\n"
    "path, nnodes, nproc, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n"
    "pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)\n"
    f"pathlib.Path(path).write_text(os.environ['{CONFIG_ENV}'], encoding='utf-8')\n"
    "topo = Topology(nnodes, nproc)\n"
    "host = os.environ['BEAKER_LEADER_REPLICA_HOSTNAME'] if nnodes > 1 else '127.0.0.1'\n"
    "rank = int(os.environ['BEAKER_REPLICA_RANK']) if nnodes > 1 else 0\n"
    "argv = launch_argv(topo, path, python=sys.executable, node_rank=rank,\n"
    "                   rendezvous=Rendezvous(host, port) if topo.distributed else None)\n"
    "os.execvp(argv[0], argv)\n"
)

# --- the client surface the backend uses ----------------------------------------------------------------


class BeakerClientLike(Protocol):
    """Just what the backend needs from Beaker; `RealBeakerClient` wraps beaker-py, `beaker_fake` fakes it."""

    def create_experiment(self, spec: BeakerExperimentSpec, name: str, workspace: str) -> BeakerWorkload:
        """Create (launch) an experiment; the returned workload's `experiment.id` is the job id we keep."""
        ...

    def list_jobs(self, workload_id: str) -> list[BeakerJob]:
        """All jobs of the workload's (single) task, oldest first (a preempted job, then its resumption)."""
        ...

    def get_job(self, job_id: str) -> BeakerJob: ...

    def list_result_files(self, job: BeakerJob) -> list[BeakerDatasetFile]:
        """The files of the job's result dataset ([] when it has none yet)."""
        ...

    def stream_result_file(self, job: BeakerJob, path: str) -> Iterable[bytes]: ...

    def cancel_workload(self, workload_id: str) -> None: ...

    def logs(self, job: BeakerJob, follow: bool = False, tail_lines: int | None = None) -> Iterable[BeakerJobLog]:
        """The job's log lines (beaker-py `JobLog`s), streaming until the job ends when `follow`."""
        ...


class RealBeakerClient:
    """beaker-py 2.x behind `BeakerClientLike`. Needs BEAKER_TOKEN (or ~/.beaker/config.yml)."""

    def __init__(self, beaker: Any = None):
        if beaker is None:
            try:
                beaker = Beaker.from_env(check_for_upgrades=False)
            except BeakerConfigurationError as e:
                raise ConfigError(f"beaker: cannot connect: {e}",
                                  hint="Set BEAKER_TOKEN to your Beaker user token.") from None
        self.beaker = beaker
        self._datasets: dict[str, Any] = {}

    def create_experiment(self, spec: BeakerExperimentSpec, name: str, workspace: str) -> BeakerWorkload:
        ws = self.beaker.workspace.get(workspace)
        return self.beaker.experiment.create(spec=spec, name=name, workspace=ws)

    def list_jobs(self, workload_id: str) -> list[BeakerJob]:
        workload = self.beaker.workload.get(workload_id)
        jobs: list[BeakerJob] = []
        for task in workload.experiment.tasks:
            jobs.extend(self.beaker.job.list(task=task, sort_order=BeakerSortOrder.ascending))
        return sorted(jobs, key=lambda j: (j.status.created.seconds, j.status.created.nanos))

    def get_job(self, job_id: str) -> BeakerJob:
        return self.beaker.job.get(job_id)

    def _dataset(self, job: BeakerJob) -> Any:
        if not job.assignment_details.result_dataset_id:
            return None
        key = job.assignment_details.result_dataset_id
        if key not in self._datasets:
            self._datasets[key] = self.beaker.job.get_results(job)
        return self._datasets[key]

    def list_result_files(self, job: BeakerJob) -> list[BeakerDatasetFile]:
        ds = self._dataset(job)
        return [] if ds is None else list(self.beaker.dataset.list_files(ds))

    def stream_result_file(self, job: BeakerJob, path: str) -> Iterable[bytes]:
        return self.beaker.dataset.stream_file(self._dataset(job), path)

    def cancel_workload(self, workload_id: str) -> None:
        self.beaker.workload.cancel(self.beaker.workload.get(workload_id))

    def logs(self, job: BeakerJob, follow: bool = False, tail_lines: int | None = None) -> Iterable[BeakerJobLog]:
        return self.beaker.job.logs(job, follow=follow, tail_lines=tail_lines)


# --- spec building --------------------------------------------------------------------------------------


def _memory(memory: Memory) -> str:
    """`64G` (binary units) as Beaker's `64GiB`; with a unit suffix as written (`64GiB`, `64GB`)."""
    return f"{memory.number}{memory.unit}iB" if not memory.suffix else memory.text.strip()


def _path_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "sweep"


def checkpoint_mount(settings: BeakerSettings) -> str | None:
    return f"{WEKA_ROOT}/{settings.checkpoint_weka}" if settings.checkpoint_weka else None


def checkpoint_dir(sweep_name: str, run: PlannedRun, settings: BeakerSettings) -> str | None:
    """Where a training run checkpoints on the Weka mount (one folder per run, the same for all its jobs)."""
    mount = checkpoint_mount(settings)
    if mount is None or not run.config.do_train:
        return None
    return f"{mount}/{settings.checkpoint_prefix}/{_path_name(sweep_name)}/{run.run_id}/checkpoints"


def shared_cache_env(run: PlannedRun, settings: BeakerSettings) -> dict[str, str]:
    """A training run with a Weka mount keeps its encoded-split cache there (`TK_CACHE_DIR`), so the jobs of a sweep,
    and a job resumed after a preemption, map the entry the first one built instead of encoding again in their own
    container. A `TK_CACHE_DIR` in `backend.beaker.env` wins."""
    mount = checkpoint_mount(settings)
    if mount is None or not run.config.do_train or CACHE_DIR_ENV in settings.env:
        return {}
    return {CACHE_DIR_ENV: f"{mount}/{settings.checkpoint_prefix}/tk-cache"}


def launch_config_yaml(run: PlannedRun, settings: BeakerSettings, sweep_name: str) -> str:
    """The run's resolved config as the task sees it: results to /results, data from /data when mounted,
    checkpoints on the Weka mount when there is one."""
    cfg = run.config.model_copy(update={"output_dir": RESULT_PATH})
    if settings.data_dataset:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": DATA_PATH})})
    ckpt = checkpoint_dir(sweep_name, run, settings)
    if ckpt is not None:
        cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"dir": ckpt})})
    return config_yaml(cfg.model_dump(mode="json"))


_yaml_blocks: dict[bytes, str] = {}


def config_yaml(data: dict[str, Any]) -> str:
    """`TrainConfig.to_yaml()`'s text (`yaml.safe_dump(data, sort_keys=False)`), one top-level key at a time with
    each key's block remembered: the runs of a sweep share most of them, and in block style the whole mapping is
    its blocks one after the other."""
    if not data:
        return yaml.safe_dump(data, sort_keys=False)
    parts = []
    for k, v in data.items():
        try:
            key = orjson.dumps([k, v])
        except TypeError:  # not JSON (a huge int): no memo
            return yaml.safe_dump(data, sort_keys=False)
        text = _yaml_blocks.get(key)
        if text is None:
            if len(_yaml_blocks) > 50_000:
                _yaml_blocks.clear()
            text = _yaml_blocks[key] = yaml.safe_dump({k: v}, sort_keys=False)
        parts.append(text)
    return "".join(parts)


def data_mounts(run: PlannedRun, settings: BeakerSettings) -> list[BeakerDataMount] | None:
    """The NI data dataset at /data; the checkpoint Weka bucket at /weka/<bucket> for a training run."""
    mounts = []
    if settings.data_dataset:
        mounts.append(BeakerDataMount(source=BeakerDataSource(beaker=settings.data_dataset), mount_path=DATA_PATH))
    mount = checkpoint_mount(settings)
    if mount is not None and run.config.do_train:
        mounts.append(BeakerDataMount(source=BeakerDataSource(weka=settings.checkpoint_weka), mount_path=mount))
    return mounts or None


def task_command(run: PlannedRun) -> list[str]:
    """The wrapper's argv; the rendezvous port is drawn from the run id (every replica gets the same one)."""
    topo = Topology.of(run.resources)
    return ["python", "-c", WRAPPER, LAUNCH_PATH, str(topo.nodes), str(topo.ranks_per_node),
            str(port_from(f"beaker-{run.run_id}"))]


def _context(settings: BeakerSettings, time_limit_s: int) -> BeakerTaskContext:
    """Preemption the beaker-py 2.x way. `auto_resume` restarts a preempted task, and the trainer resumes from its
    newest checkpoint on the `checkpoint_weka` mount (a restarted job's /results is empty); `min_runtime` protects
    a task from preemption: none when `preemptible`, else the whole time limit, unless the sweep names one."""
    if settings.min_runtime is not None:
        min_runtime = settings.min_runtime.seconds * 1_000_000_000
    else:
        min_runtime = 0 if settings.preemptible else time_limit_s * 1_000_000_000
    return BeakerTaskContext(priority=BeakerJobPriority.from_any(settings.priority),
                             min_runtime=min_runtime or None, auto_resume=settings.auto_resume)


def experiment_name(sweep: Sweep, run: PlannedRun) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{sweep.name}-{run.run_id}").strip("-.")
    return name[:128]


class BeakerBackend:
    name = "beaker"
    runs_here = False

    def __init__(self, client: BeakerClientLike | None = None, include_checkpoints: bool = False):
        self._client = client
        self.include_checkpoints = include_checkpoints
        self._sweep: Sweep | None = None

    @property
    def client(self) -> BeakerClientLike:
        if self._client is None:
            self._client = RealBeakerClient()
        return self._client

    # -- validation & rendering ----------------------------------------------------------------------

    def check(self, sweep: Sweep) -> None:
        s = sweep.spec.backend.beaker
        where = f"{sweep.path}: backend.beaker"
        if not s.image:
            raise ConfigError(f"{where}.image is required (a Beaker image name)",
                              hint="For example: image: myuser/tk-instruct")
        if not s.workspace:
            raise ConfigError(f"{where}.workspace is required", hint="For example: workspace: ai2/tk-instruct")
        if not s.clusters:
            raise ConfigError(f"{where}.clusters is required (a list of cluster names)",
                              hint="For example: clusters: [ai2/jupiter]")
        for env_name in s.multinode_env:
            if env_name in s.env or env_name in s.secrets:
                raise ConfigError(f"{where}: '{env_name}' is both in multinode_env and in env or secrets",
                                  hint="Keep multi-node-only settings in multinode_env only.")
        for env_name in s.secrets:
            if env_name in s.env:
                raise ConfigError(f"{where}: '{env_name}' is both in env and in secrets",
                                  hint="Keep it in secrets (by secret name) only.")
        if CONFIG_ENV in s.env or CONFIG_ENV in s.secrets:
            raise ConfigError(f"{where}: {CONFIG_ENV} is reserved (it carries the run's config)")

    def preflight_warnings(self, sweep: Sweep) -> list[str]:
        """What works but probably not as meant (one line each); `plan` and `submit` print them."""
        s = sweep.spec.backend.beaker
        if s.checkpoint_weka or not s.preemptible or not any(r.config.do_train for r in sweep.runs):
            return []
        return [f"{sweep.path}: backend.beaker: preemptible training runs checkpoint into their result dataset "
                f"({RESULT_PATH}), which a job resumed after a preemption does not get back, so it restarts at step 0; "
                "set backend.beaker.checkpoint_weka, for example: checkpoint_weka: oe-training-default"]

    def images(self, sweep: Sweep) -> list[tuple[str, str]]:
        image = sweep.spec.backend.beaker.image
        return [("backend.beaker.image", image)] if image else []

    def build_spec(self, sweep: Sweep, spec: RunSpec) -> BeakerExperimentSpec:
        s = sweep.spec.backend.beaker
        run, res = spec.run, spec.run.resources
        env = [BeakerEnvVar(name=CONFIG_ENV, value=launch_config_yaml(run, s, sweep.name))]
        env += [BeakerEnvVar(name=k, value=str(v)) for k, v in sorted({**shared_cache_env(run, s), **s.env}.items())]
        if res.nodes > 1:
            env += [BeakerEnvVar(name=k, value=str(v)) for k, v in sorted(s.multinode_env.items())]
        env += [BeakerEnvVar(name=k, secret=str(v)) for k, v in sorted(s.secrets.items())]
        task = BeakerTaskSpec(
            name=run.run_id,
            image=BeakerImageSource(beaker=s.image),
            context=_context(s, res.time.seconds),
            result=BeakerResultSpec(path=RESULT_PATH),
            constraints=BeakerConstraints(cluster=list(s.clusters)),
            command=task_command(run),
            env_vars=env,
            datasets=data_mounts(run, s),
            resources=BeakerTaskResources(cpu_count=float(res.cpus), gpu_count=res.gpus, memory=_memory(res.memory),
                                          shared_memory=s.shared_memory if res.world_size > 1 else None),
            timeout=res.time.seconds * 1_000_000_000,
        )
        if res.nodes > 1:
            task = dataclasses.replace(task, replicas=res.nodes, leader_selection=True, host_networking=True,
                                       propagate_failure=True, propagate_preemption=True,
                                       synchronized_start_timeout=s.synchronized_start_timeout_s * 1_000_000_000)
        varied = ", ".join(f"{k}={v}" for k, v in run.varied.items())
        return BeakerExperimentSpec(
            version=BeakerSpecVersion.v2,
            description=f"{sweep.name}/{run.run_id}" + (f": {varied}" if varied else ""),
            tasks=[task],
            budget=s.budget,
            retry=BeakerRetrySpec(allowed_task_retries=s.retries),
        )

    def render(self, sweep: Sweep, specs: Sequence[RunSpec]) -> dict[str, str]:
        return {f"{rs.run.run_id}.beaker.json": spec_json(self.build_spec(sweep, rs)) for rs in specs}

    # -- the job lifecycle ---------------------------------------------------------------------------

    def submit(self, sweep: Sweep, specs: Sequence[RunSpec], on_job: Callable[[Job], None] | None = None) -> list[Job]:
        """One experiment per run, created one at a time (`on_job` gets each as it is created)."""
        self.check(sweep)
        workspace = sweep.spec.backend.beaker.workspace
        assert workspace is not None
        built = [(rs, self.build_spec(sweep, rs)) for rs in specs]  # build all first: no half-submitted sweep on a bad run
        jobs = []
        for rs, bspec in built:
            workload = self.client.create_experiment(bspec, experiment_name(sweep, rs.run), workspace)
            jobs.append(Job(rs.run.run_id, workload.experiment.id))
            if on_job:
                on_job(jobs[-1])
        return jobs

    def status(self, jobs: Sequence[Job]) -> dict[str, JobState]:
        out: dict[str, JobState] = {}
        for job in jobs:
            try:
                out[job.job_id] = attempt_state(current_attempt(self.client.list_jobs(job.job_id)))
            except Exception:  # an unreachable or unknown workload is "unknown", never a crash
                out[job.job_id] = "unknown"
        return out

    def cancel(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.client.cancel_workload(job.job_id)

    def logs(self, target: LogTarget, follow: bool, tail: int | None, out: IO[str], poll: float) -> int:
        return beaker_jobs.logs(self.client, target, follow, tail, out)

    def pull(self, job: Job, run_dir: Path) -> list[Path]:
        """Copy the newest job's result dataset (the run directory) into `run_dir`; returns the written files.

        Each file is written atomically. Checkpoints are left out unless `include_checkpoints`; with
        `checkpoint_weka` they are on Weka, never in a result dataset.
        """
        attempt = current_attempt(self.client.list_jobs(job.job_id))
        newest = leader(attempt)
        if newest is None:
            return []
        root = Path(run_dir)
        written = []
        for f in self.client.list_result_files(newest):
            rel = _safe_relpath(f.path)
            if not self.include_checkpoints and rel.parts[0] == CHECKPOINTS_DIR:
                continue
            target = root.joinpath(*rel.parts)
            with atomic_open(target, "wb") as fh:
                for chunk in self.client.stream_result_file(newest, f.path):
                    fh.write(chunk)
            written.append(target)
        return written


def spec_json(spec: BeakerExperimentSpec) -> str:
    """`json.dumps(spec.to_json(), sort_keys=True, indent=2)` and a newline. orjson writes the same text (and 10x
    faster) but for non-ASCII text, a float in exponent form or not finite, and a huge int: then json writes it."""
    odd: list[float] = []
    data = spec_to_json(spec, odd)
    if not odd:
        try:
            text = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        except TypeError:
            text = b"\xff"
        if text.isascii():
            return text.decode() + "\n"
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


_spec_fields: dict[type, tuple[tuple[tuple[str, str], ...], bool]] = {}


def spec_to_json(x: Any, odd: list[float] | None = None) -> Any:
    """`BeakerExperimentSpec.to_json()` (beaker-py's `jsonify`), with each spec class's fields and their camelCase
    names looked up once per class instead of once per object: most of a spec's rendering time otherwise. Floats
    that `json` and orjson write differently (exponent, NaN, infinity) are added to `odd`."""
    cls = type(x)
    if x is None or cls is str or cls is int or cls is bool:
        return x
    if cls is float:
        if odd is not None and ("e" in repr(x) or not math.isfinite(x)):
            odd.append(x)
        return x
    info = _spec_fields.get(cls)
    if info is None and dataclasses.is_dataclass(x):
        info = _spec_fields[cls] = (tuple((f.name, to_lower_camel(f.name)) for f in dataclasses.fields(x)),
                                    hasattr(x, "_patch_json"))
    if info is not None:
        d = {}
        for name, camel in info[0]:
            value = getattr(x, name)
            if value is not None:
                d[camel] = spec_to_json(value, odd)
        if info[1]:
            x._patch_json(d)
        return d
    if isinstance(x, Enum):
        return x.name
    if isinstance(x, dict):
        return {key: spec_to_json(value, odd) for key, value in x.items()}
    if isinstance(x, list | tuple | set):
        return [spec_to_json(v, odd) for v in x]
    if isinstance(x, float) and odd is not None:
        odd.append(x)  # a float subclass: let json write it
    return x


def spec_from_json(data: dict[str, Any]) -> BeakerExperimentSpec:
    """`BeakerExperimentSpec.from_json`, plus the one repair it needs: beaker-py 2.8 leaves a data mount's
    `source` a plain dict instead of a `BeakerDataSource` (its JSON is the same either way)."""
    with warnings.catch_warnings():  # reading back `preemptible` warns that it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = BeakerExperimentSpec.from_json(data)
    for task in spec.tasks:
        for mount in task.datasets or []:
            if isinstance(mount.source, dict):
                mount.source = BeakerDataSource.from_json(mount.source)
    return spec


def _safe_relpath(path: str) -> PurePosixPath:
    rel = PurePosixPath(path.lstrip("/"))
    if not rel.parts or ".." in rel.parts:
        raise ValueError(f"refusing result file path {path!r}")
    return rel
