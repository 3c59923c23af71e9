"""SLURM through submitit: one job array per resource group, requeued on preemption / timeout.

What is submitted is what `render` shows: both go through submitit's own `SlurmExecutor` parameter handling
(misspelled parameter names are rejected there, with the valid names listed) and its `_make_sbatch_string`.

Each array task unpickles a `TrainerJob` (a `submitit.helpers.Checkpointable`) and calls it with the run's
`launch.yaml`. It runs `launcher.topology.launch_argv` for the run's topology as a child process (no shell: every
value is one argv element), inside a container where configured. submitit's own python -- its wrapper, its signal
handling and its `scontrol requeue` -- always runs on the HOST, in the launcher's environment, never in the image:

- pyxis: the child is a job step of its own on this node, `srun --overlap --nodes=1 --ntasks=1 --nodelist=NODE
  --container-image=IMAGE --container-mounts=... --container-workdir=REPO python -m trainer ...`, so only the trainer
  runs in the image. (Were submitit's python in the image -- `--container-image` on submitit's own srun -- its
  requeue would call `scontrol` inside the container, where it is absent: NVIDIA/pyxis#129, no requeue on a time
  limit or preemption.) `--overlap` lets the step share the CPUs, memory and GPUs the wrapper's step holds;
  without `--exact` it gets all of them on its node (srun's defaults: the node's CPUs of the job, all its GRES);
- apptainer: `apptainer exec [--nv] --bind ... --pwd REPO IMAGE python -m trainer run --config ...`.

SIGTERM and SIGUSR2 are forwarded to the trainer, which saves a checkpoint and exits 75. After SIGUSR2 (what
submitit asks SLURM to send before the time limit, and what preemption tooling sends) the job hands over to
submitit's handler as soon as the trainer's state is saved (status.json says preempted) or it has exited, which
calls `checkpoint()` (a `DelayedSubmission` of the same call) and requeues the job; the trainer resumes from its own
newest complete checkpoint. Under pyxis the signals SLURM sends to the job reach the trainer's step directly; the
wrapper forwards USR2 to its `srun` too (srun passes it on), but never SIGTERM, which srun answers by SIGKILLing its
tasks (`srun_job.c`, "forcing job termination"). With proctrack/cgroup (the usual GPU cluster) SLURM signals only a
step's task, not the task's children, so that srun never sees SLURM's SIGTERM; with proctrack/linuxproc or pgid
(the CI cluster) it does, and the trainer's checkpoint on a SIGTERM races srun's SIGKILL -- the run then resumes
from its newest periodic checkpoint. The USR2 path does not race: the trainer saves before anything is requeued.
A run of world size > 1 starts one task per node that runs
`torch.distributed.run` with ranks-per-node processes, rendezvousing on the first node of the job (localhost on one
node) at a port derived from the job id.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml
from submitit.core.utils import DelayedSubmission, FailedJobError, FailedSubmissionError
from submitit.helpers import Checkpointable
from submitit.slurm import slurm as submitit_slurm
from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

from launcher.backends import slurm_logs
from launcher.backends.base import BackendUnavailable, Job, JobState, LogTarget, RunSpec
from launcher.sweep import Container, Resources, SlurmSettings, Sweep
from launcher.topology import SHUTDOWN_GRACE_S, Rendezvous, Topology, free_port, launch_argv, port_from
from ni.errors import ConfigError, TkError
from ni.run_layout import RunLayout
from trainer.rundir import EXIT_PREEMPTED

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize

_STATES: dict[str, JobState] = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending",
    "RUNNING": "running", "COMPLETING": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "SUSPENDED": "running", "STOPPED": "running", "RESIZING": "running",
    "COMPLETED": "completed",
    "FAILED": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed", "TIMEOUT": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed", "SPECIAL_EXIT": "failed",
    "REQUEUED": "pending",  # on its way back to PENDING: SLURM runs it again, the launcher must not
    "PREEMPTED": "preempted",
    "CANCELLED": "cancelled", "REVOKED": "cancelled",
}


def map_state(slurm_state: str) -> JobState:
    """A SLURM state word ("CANCELLED by 0", "OUT_OF_MEMORY", "CA") as a backend JobState."""
    word = slurm_state.strip().split(" ")[0].rstrip("+").upper()
    return _STATES.get(word, "unknown")


# --- the callable each array task runs -----------------------------------------------------------------


def _first_host() -> str:
    """The rendezvous address: the first node of the job, as SLURM reaches it (its NodeAddr; the name otherwise)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    if nodelist:
        hosts: list[str] = []
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                   timeout=60, check=True).stdout.split()
        hosts = hosts or [str(h) for h in submitit_slurm._parse_node_list(nodelist)]
        if hosts:
            return node_address(hosts[0])
    return socket.gethostname()


def node_address(node: str) -> str:
    """`NodeAddr` of a SLURM node (differs from its name on clusters that route by address), else the name."""
    try:
        text = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return node
    m = re.search(r"(?:^|\s)NodeAddr=(\S+)", text)
    return m.group(1) if m else node


def run_dir_of(config_path: str | os.PathLike[str]) -> Path:
    """The run directory of a launch.yaml: its output_dir (the launcher writes the file into it)."""
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        out = (yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}).get("output_dir")
        if out:
            return Path(out)
    return Path(config_path).parent


def state_saved(run_dir: Path) -> bool:
    """The trainer has written its checkpoint after a stop signal (status.json says preempted)."""
    return RunLayout(run_dir).read_status().state == "preempted"


def after_exit(code: int, got: Sequence[int]) -> str:
    """What the wrapper makes of the trainer's exit: 'done'; 'requeue' after a USR2 (SLURM's notice before a
    preemption or the time limit), however the trainer ended -- exit 75 with its state saved, or killed by a second
    copy of the signal -- since a requeued run resumes from its newest complete checkpoint either way; 'stopped'
    (exit 75 or killed by a SIGTERM it got: SLURM itself requeues or cancels the job); 'failed'."""
    if code == 0:
        return "done"
    if signal.SIGUSR2 in got:
        return "requeue"
    if code == EXIT_PREEMPTED or (code < 0 and -code in got):
        return "stopped"
    return "failed"


def rendezvous(nodes: int) -> Rendezvous:
    """Where this job's ranks meet: the first node (localhost on one node), at a port every node derives from the
    job id as submitit's TorchDistributedEnvironment does (MASTER_PORT, when set, wins)."""
    host = _first_host() if nodes > 1 else "127.0.0.1"
    if os.environ.get("MASTER_PORT"):
        return Rendezvous(host, int(os.environ["MASTER_PORT"]))
    job = os.environ.get("SLURM_JOB_ID")
    return Rendezvous(host, port_from(job) if job else free_port())


class TrainerJob(Checkpointable):
    """Runs one run's trainer in a child process; picklable (module-level, plain attributes)."""

    def __init__(self, container: Container | None = None, nodes: int = 1, gpus_per_node: int = 0,
                 mounts: Sequence[str] = (), ranks_per_node: int | None = None, grace_s: int = SHUTDOWN_GRACE_S) -> None:
        self.container = container.model_dump() if container is not None else Container().model_dump()
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.ranks_per_node = ranks_per_node or gpus_per_node or 1
        self.mounts = list(mounts)
        self.grace_s = grace_s

    @property
    def in_step(self) -> bool:
        """The trainer runs as a job step of its own (pyxis), started by `srun` from this host-side wrapper."""
        return bool(self.container["kind"] == "pyxis")

    @property
    def topology(self) -> Topology:
        return Topology(self.nodes, self.ranks_per_node)

    def argv(self, config_path: str | os.PathLike[str], python: str | None = None, node_rank: int = 0,
             rdzv: Rendezvous | None = None, node: str | None = None) -> list[str]:
        """The child's argv: this node's part of the launch (launcher.topology), in the container if set. `node` is
        this node's SLURM name (pyxis: the step runs here; default $SLURMD_NODENAME)."""
        kind, image = self.container["kind"], self.container["image"]
        py = "python" if kind in ("apptainer", "pyxis") else (python or sys.executable)
        inner = launch_argv(self.topology, str(config_path), python=py, node_rank=node_rank, rendezvous=rdzv,
                            grace_s=getattr(self, "grace_s", SHUTDOWN_GRACE_S))
        if kind == "pyxis":
            here = node or os.environ.get("SLURMD_NODENAME") or os.uname().nodename
            return ["srun", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={here}", "--unbuffered",
                    *pyxis_flags(str(image), self.mounts), *inner]
        if kind != "apptainer":
            return inner
        prefix = ["apptainer", "exec"] + (["--nv"] if self.gpus_per_node else [])
        for m in self.mounts:
            prefix += ["--bind", m]
        return [*prefix, "--pwd", str(REPO), str(image), *inner]

    def __call__(self, config_path: str) -> int:
        node_rank = int(os.environ.get("SLURM_NODEID", "0"))
        rdzv = rendezvous(self.nodes) if self.topology.distributed else None
        argv = self.argv(config_path, node_rank=node_rank, rdzv=rdzv)
        print("+ " + " ".join(shlex.quote(a) for a in argv), flush=True)
        got: list[int] = []
        proc = subprocess.Popen(argv)

        def forward(signum: int, frame: Any) -> None:
            got.append(signum)
            # srun turns a SIGTERM into SIGKILL for its tasks; SLURM's own SIGTERM reaches the trainer's step anyway
            if proc.poll() is None and not (self.in_step and signum == signal.SIGTERM):
                proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR2)}
        run_dir = run_dir_of(config_path)
        code: int | None = None
        try:
            while code is None:
                try:
                    code = proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    if signal.SIGUSR2 in got and state_saved(run_dir):
                        break  # requeue now, while the job still has time; the trainer is only tearing down
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        if code is not None and self.in_step and code > 128:
            code = 128 - code  # srun's exit for a task killed by signal N is 128 + N; as Popen says it: -N
        outcome = "requeue" if code is None else after_exit(code, got)
        if outcome == "done":
            return 0
        if outcome == "requeue":
            handler = previous[signal.SIGUSR2]
            if callable(handler):  # submitit's: checkpoint() + `scontrol requeue` + exit
                handler(signal.SIGUSR2, None)
        if outcome in ("requeue", "stopped"):
            raise RuntimeError(f"trainer stopped by signal {got} (exit {code}); its newest checkpoint is kept; "
                               "not requeued here")
        raise RuntimeError(f"trainer exited with code {code}: {' '.join(shlex.quote(a) for a in argv)}")

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Requeue the same call: the trainer resumes from its newest complete checkpoint in the run dir."""
        return DelayedSubmission(self, *args, **kwargs)


def pyxis_flags(image: str, mounts: Sequence[str]) -> list[str]:
    """pyxis's srun options for the trainer's step: the image, the bind mounts (comma-separated: pyxis's syntax,
    which is why `check` refuses a comma inside a mount), the repository as the working directory."""
    return [f"--container-image={image}", f"--container-mounts={','.join(mounts)}", f"--container-workdir={REPO}"]


class SubmitFailed(TkError):
    """sbatch refused a submission; `jobs` were submitted before it (the caller records them)."""

    def __init__(self, message: str, jobs: list[Job]):
        super().__init__(message, hint="Check the cluster (sinfo, the partition, the limits) and submit again: "
                         "what was submitted is recorded and is not submitted twice.")
        self.jobs = jobs


# --- parameters --------------------------------------------------------------------------------------


class _OfflineExecutor(SlurmExecutor):
    """submitit's SlurmExecutor without its `srun` check: parameter handling and rendering, no cluster."""

    @classmethod
    def affinity(cls) -> int:
        return 2


def _sweep_folder(specs: Sequence[RunSpec]) -> Path:
    return specs[0].run_dir.parent / ".submitit"


class SlurmBackend:
    name = "slurm"
    runs_here = False

    def __init__(self, extra_parameters: dict[str, Any] | None = None, max_num_timeout: int = 3) -> None:
        self.extra_parameters = dict(extra_parameters or {})  # more submitit SlurmExecutor parameters
        self.max_num_timeout = max_num_timeout
        self._cluster_max_array: int | None = None

    # -- building blocks --

    def _mounts(self, settings: SlurmSettings, specs: Sequence[RunSpec]) -> list[str]:
        mounts = list(settings.container.mounts)
        for path in (str(specs[0].run_dir.parent.resolve()), str(REPO)):
            if not any(m.split(":")[0] == path for m in mounts):
                if "," in path:  # pyxis and apptainer both read a comma as the end of a mount
                    raise ConfigError(f"{path}: a path with a comma cannot be mounted into the container",
                                      hint="Use a runs root (--runs-root) and a checkout whose paths have no comma.")
                mounts.append(f"{path}:{path}")
        return mounts

    def parameters(self, sweep: Sweep, res: Resources, specs: Sequence[RunSpec]) -> dict[str, Any]:
        """Keyword arguments for submitit's SlurmExecutor (generic names converted by its `_convert_parameters`)."""
        s = sweep.spec.backend.slurm
        params: dict[str, Any] = {
            "job_name": f"tk-{sweep.name}",
            "nodes": res.nodes,
            "tasks_per_node": 1,
            "cpus_per_task": res.cpus,
            "mem_gb": res.memory.gib,
            "timeout_min": res.time.minutes,
            "array_parallelism": s.array_parallelism,
            "wckey": s.wckey,
            "signal_delay_s": s.signal_delay_s,
            "additional_parameters": {**s.additional_parameters, "chdir": str(REPO)},
        }
        if res.gpus and s.gres_style == "gres":
            params["gres"] = f"gpu:{res.gpus}"
        elif res.gpus:
            params["gpus_per_node"] = res.gpus
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(s, key) is not None:
                params[key] = getattr(s, key)
        if s.setup:
            params["setup"] = list(s.setup)
        params.update(self.extra_parameters)
        return params

    def _executor(self, sweep: Sweep, res: Resources, specs: Sequence[RunSpec], cls: type[SlurmExecutor]) -> SlurmExecutor:
        # submitit's python is this launcher's, on the host, whatever the container (see the module docstring)
        ex = cls(folder=_sweep_folder(specs), max_num_timeout=self.max_num_timeout)
        # submitit's own conversion (mem_gb -> mem "16GB", timeout_min -> time, tasks_per_node -> ntasks_per_node)
        # and validation: unknown names are rejected with the valid ones listed
        ex.update_parameters(**ex._convert_parameters(self.parameters(sweep, res, specs)))
        return ex

    def job_callable(self, sweep: Sweep, res: Resources, specs: Sequence[RunSpec]) -> TrainerJob:
        s = sweep.spec.backend.slurm
        mounts = self._mounts(s, specs) if s.container.kind in ("apptainer", "pyxis") else []
        return TrainerJob(s.container, res.nodes, res.gpus, mounts, res.ranks_per_node, s.signal_delay_s)

    def max_array_size(self, sweep: Sweep, ask_cluster: bool) -> int:
        if sweep.spec.backend.slurm.max_array_size is not None:
            return max(1, sweep.spec.backend.slurm.max_array_size)
        if not ask_cluster:
            return DEFAULT_MAX_ARRAY_SIZE
        if self._cluster_max_array is None:
            self._cluster_max_array = DEFAULT_MAX_ARRAY_SIZE
            try:
                out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
                m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
                if m:
                    self._cluster_max_array = int(m.group(1))
            except (OSError, subprocess.SubprocessError):
                pass
        return self._cluster_max_array

    def arrays(self, sweep: Sweep, specs: Sequence[RunSpec], ask_cluster: bool = False) -> list[list[RunSpec]]:
        """Runs grouped by resources (first-seen order), each group cut at MaxArraySize."""
        groups: dict[str, list[RunSpec]] = {}
        for spec in specs:
            groups.setdefault(spec.run.resource_key(), []).append(spec)
        size = self.max_array_size(sweep, ask_cluster)
        return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]

    # -- Backend --

    def check(self, sweep: Sweep) -> None:
        c = sweep.spec.backend.slurm.container
        if c.kind in ("pyxis", "apptainer") and not c.image:
            raise ConfigError(f"{sweep.path}: backend.slurm.container.kind is {c.kind} but no image is set",
                              hint="Set backend.slurm.container.image (e.g. docker://ghcr.io/org/tk:latest).")
        if c.kind == "docker":
            raise ConfigError(f"{sweep.path}: backend.slurm.container.kind docker is not supported on SLURM",
                              hint="Use pyxis (enroot) or apptainer with the same image.")
        for m in c.mounts:
            if not m or m.count(":") > 2 or m.startswith(":"):
                raise ConfigError(f"{sweep.path}: backend.slurm.container.mounts: bad mount '{m}'",
                                  hint="Use host:container or host:container:ro.")
            if "," in m and c.kind in ("pyxis", "apptainer"):
                raise ConfigError(f"{sweep.path}: backend.slurm.container.mounts: '{m}' has a comma, which {c.kind} "
                                  "reads as the end of a mount (a:a,b:b is two of them)",
                                  hint="Mount a directory whose path has no comma (a symlink to it will do).")
        delay = sweep.spec.backend.slurm.signal_delay_s  # what --signal=USR2@N is rendered with
        for run in sweep.runs:
            if run.resources.time.seconds < delay + 60:
                raise ConfigError(
                    f"{sweep.path}: resources.time {run.resources.time}: SLURM warns a job {delay} s before its time "
                    "limit (backend.slurm.signal_delay_s; USR2: checkpoint and requeue), so a limit this short warns "
                    "it at once", hint=f"Give at least {delay + 60} s, e.g. time: \"00:15:00\", or a shorter "
                    "signal_delay_s.")

    def preflight_warnings(self, sweep: Sweep) -> list[str]:
        return []

    def images(self, sweep: Sweep) -> list[tuple[str, str]]:
        c = sweep.spec.backend.slurm.container
        return [("backend.slurm.container.image", c.image)] if c.kind != "none" and c.image else []

    def render(self, sweep: Sweep, specs: Sequence[RunSpec]) -> dict[str, str]:
        """sbatch-<i>.sh: the exact scripts submit() hands to sbatch (with the cluster's default MaxArraySize)."""
        self.check(sweep)
        out: dict[str, str] = {}
        for i, chunk in enumerate(self.arrays(sweep, specs)):
            ex = self._executor(sweep, chunk[0].run.resources, chunk, _OfflineExecutor)
            params = dict(ex.parameters)
            if len(chunk) > 1:
                params["map_count"] = len(chunk)  # what submitit's array submission sets
            out[f"sbatch-{i}.sh"] = _make_sbatch_string(command=ex._submitit_command_str, folder=ex.folder, **params)
        return out

    def submit(self, sweep: Sweep, specs: Sequence[RunSpec], on_job: Callable[[Job], None] | None = None) -> list[Job]:
        """One job array per resource group (cut at MaxArraySize); `on_job` gets an array's jobs once sbatch took it.
        SubmitFailed when sbatch refuses one, naming the jobs submitted before it."""
        if not specs:
            return []
        self.check(sweep)
        jobs: list[Job] = []
        for chunk in self.arrays(sweep, specs, ask_cluster=True):
            res = chunk[0].run.resources
            ex = self._executor(sweep, res, chunk, SlurmExecutor)
            fn = self.job_callable(sweep, res, chunk)
            try:
                submitted = ex.map_array(fn, [str(s.config_path.resolve()) for s in chunk])
            except (FailedJobError, FailedSubmissionError) as e:
                lines = [line for line in str(e).splitlines() if line.strip()]
                raise SubmitFailed(f"sbatch: {lines[-1] if lines else type(e).__name__}", jobs) from None
            for s, j in zip(chunk, submitted, strict=True):
                jobs.append(Job(s.run.run_id, str(j.job_id)))
                if on_job:
                    on_job(jobs[-1])
        return jobs

    def status(self, jobs: Sequence[Job]) -> dict[str, JobState]:
        ids = list(dict.fromkeys(j.job_id for j in jobs))
        if not ids:
            return {}
        found = _query_squeue(ids)
        rest = [i for i in ids if i not in found]
        if rest:
            found.update(_query_sacct(rest))
        return {i: found.get(i, "unknown") for i in ids}

    def cancel(self, jobs: Sequence[Job]) -> None:
        ids = list(dict.fromkeys(j.job_id for j in jobs))
        if not ids:
            return
        try:
            p = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise ConfigError(f"scancel: {e}",
                              hint="Nothing was cancelled; check the cluster (sinfo) and cancel again.") from None
        errors = [line for line in p.stderr.splitlines() if "error" in line and "Invalid job id" not in line
                  and "already completing or completed" not in line]
        if p.returncode != 0 and errors:  # slurmctld down: saying "cancel sent" would be a lie
            raise ConfigError(f"scancel: {errors[-1].removeprefix('scancel: ').strip()}",
                              hint="The jobs may still run; check the cluster (sinfo) and cancel again.")

    def pull(self, job: Job, run_dir: Path) -> list[Path]:
        return []  # the job wrote the shared run directory itself

    def logs(self, target: LogTarget, follow: bool, tail: int | None, out: IO[str], poll: float) -> int:
        return slurm_logs.logs(self, target, follow, tail, out, poll)


def _run(argv: list[str]) -> str | None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def _parse_states(text: str, sep: str | None) -> dict[str, JobState]:
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.strip().split(sep, 1)
        if len(parts) == 2 and parts[0]:
            out[parts[0]] = map_state(parts[1])
    return out


def _squeue(argv: list[str], tries: int = 3) -> str | None:
    """squeue's output, or None when it does not know a job id (purged after MinJobAge) or is not installed.

    A squeue that fails otherwise (slurmctld busy or down) is asked again, then raises: reading that as "no such
    job" would make `submit` launch a second copy of a run SLURM still holds."""
    err = ""
    for attempt in range(tries):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except OSError:
            return None
        except subprocess.SubprocessError as e:
            err = str(e)
        else:
            if p.returncode == 0:
                return p.stdout
            if "Invalid job id" in p.stderr:
                return None
            err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
        if attempt + 1 < tries:
            time.sleep(1 + attempt)
    raise BackendUnavailable(f"squeue: no answer from SLURM after {tries} tries ({err})",
                             hint="Check the cluster (sinfo) and try again; nothing was submitted or cancelled.")


def _query_squeue(ids: list[str]) -> dict[str, JobState]:
    """squeue knows jobs until MinJobAge after they end, without any accounting database."""
    base = ["squeue", "--states=all", "-h", "-r", "-o", "%i %T", "-j"]
    text = _squeue([*base, ",".join(ids)])
    if text is None:  # one unknown id makes squeue fail for all: ask one by one
        text = "".join(_squeue([*base, i]) or "" for i in ids)
    got = _parse_states(text, None)
    return {i: got[i] for i in ids if i in got}


def _query_sacct(ids: list[str]) -> dict[str, JobState]:
    text = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)])
    got = _parse_states(text or "", "|")
    return {i: got[i] for i in ids if i in got}

