"""Local backend: runs on this machine, one after another or N at a time, optionally in `docker run`.

A run starts as `launcher.topology` says: world size 1 is the trainer, more is `torch.distributed.run` with its
ranks per node -- several nodes are several agents here with different node ranks, all meeting at localhost on a
free port. On a machine with GPUs each run gets exactly its GPUs (nodes x gpus of them, its own slice of
CUDA_VISIBLE_DEVICES per node agent) and waits until they are free; without GPUs the ranks run on CPU (gloo).
Ctrl-C sends SIGTERM to every running run (its agents forward it to the ranks, which checkpoint and exit), waits
for them, and leaves resumable state behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from launcher import tail as tails
from launcher.backends.base import Job, JobState, LogTarget, NotStartedError, RunSpec, shell_join
from launcher.sweep import Container, Sweep
from launcher.topology import Rendezvous, Topology, free_port, launch_argv
from ni.errors import ConfigError
from ni.locks import alive, process_start

LOG = "launcher.log"  # RUN/launcher.log: the trainer's stdout and stderr, appended by every local attempt


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def docker_command(container: Container, spec: RunSpec, gpus: list[str], inner: list[str]) -> list[str]:
    """`docker run` of the trainer image (its entrypoint is python); the run directory is mounted at the same
    path inside. Several ranks share memory (--ipc=host) and reach the rendezvous on localhost (--network=host)."""
    run_dir = str(spec.run_dir.resolve())
    argv = ["docker", "run", "--rm", "--init", "-v", f"{run_dir}:{run_dir}"]
    for mount in container.mounts:
        argv += ["-v", mount]
    if gpus:
        argv += ["--gpus", f"\"device={','.join(gpus)}\""]
    if Topology.of(spec.run.resources).distributed:
        argv += ["--ipc=host", "--network=host"]
    assert container.image is not None
    return [*argv, container.image, *inner[1:]]


class GpuPool:
    """The machine's GPUs, handed out whole to runs (each run gets its own) and returned when it ends."""

    def __init__(self, gpus: list[str]):
        self.free = list(gpus)
        self.total = len(gpus)
        self.cond = threading.Condition()

    def take(self, n: int, stop: threading.Event) -> list[str] | None:
        with self.cond:
            while len(self.free) < n:
                if stop.is_set():
                    return None
                self.cond.wait(0.5)
            got, self.free = self.free[:n], self.free[n:]
            return got

    def give(self, gpus: list[str]) -> None:
        with self.cond:
            self.free += gpus
            self.cond.notify_all()


def local_job_id(pid: int) -> str:
    """`local-PID-START`: the start time makes the id name one process, never a later one given the same PID."""
    start = process_start(pid)
    return f"local-{pid}" if start is None else f"local-{pid}-{start}"


def parse_local_job_id(job_id: str) -> tuple[int, int | None]:
    parts = job_id.removeprefix("local-").split("-")
    try:
        return int(parts[0]), (int(parts[1]) if len(parts) > 1 else None)
    except ValueError:
        raise ConfigError(f"manifest: '{job_id}' is not a local job id",
                          hint="For example: local-12345-6789 (written by `launcher submit`).") from None


class LocalBackend:
    name = "local"
    runs_here = True

    def __init__(self) -> None:
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}

    def commands(self, sweep: Sweep, spec: RunSpec, gpus: list[str], port: int | None = None) -> list[list[str]]:
        """One argv per node of the run (node rank order); `gpus` is the run's whole slice, split between them."""
        topo = Topology.of(spec.run.resources)
        rdzv = Rendezvous("127.0.0.1", port if port is not None else free_port()) if topo.distributed else None
        container = sweep.spec.backend.local.container
        python = "python" if container.kind == "docker" else None
        out = []
        for rank in range(topo.nodes):
            inner = launch_argv(topo, spec.config_path.resolve(), python=python, node_rank=rank, rendezvous=rdzv)
            out.append(docker_command(container, spec, node_gpus(gpus, topo, rank), inner)
                       if container.kind == "docker" else inner)
        return out

    def command(self, sweep: Sweep, spec: RunSpec, gpus: list[str]) -> list[str]:
        """The argv of a one-node run (node 0's of a multi-node one)."""
        return self.commands(sweep, spec, gpus)[0]

    def check(self, sweep: Sweep) -> None:
        container = sweep.spec.backend.local.container
        if container.kind not in ("none", "docker"):
            raise ConfigError(f"{sweep.path}: backend.local.container.kind: '{container.kind}' is for SLURM",
                              hint="Locally use kind: docker or none.")
        if container.kind == "docker" and not container.image:
            raise ConfigError(f"{sweep.path}: backend.local.container.image is required with kind: docker",
                              hint="For example: image: tk-lab-trainer:<git-sha> (make image).")

    def preflight_warnings(self, sweep: Sweep) -> list[str]:
        return []

    def images(self, sweep: Sweep) -> list[tuple[str, str]]:
        container = sweep.spec.backend.local.container
        return [("backend.local.container.image", container.image)] if container.kind != "none" and container.image else []

    def render(self, sweep: Sweep, specs: Sequence[RunSpec]) -> dict[str, str]:
        """One line per node agent; a distributed run's port (shown as 0) is a free one picked at its start."""
        out = {}
        for s in specs:
            lines = [shell_join(argv) for argv in self.commands(sweep, s, [], port=0)]
            if Topology.of(s.run.resources).distributed:
                lines = ["# torch.distributed.run agents on this machine; --master_port: a free port at start", *lines]
            out[f"{s.run.run_id}.local.sh"] = "\n".join(lines) + "\n"
        return out

    def submit(self, sweep: Sweep, specs: Sequence[RunSpec], on_job: Callable[[Job], None] | None = None) -> list[Job]:
        """Run everything now (blocking), `parallel` at a time, each with its own GPUs; returns when all ended.
        `on_job` gets each run's job as its processes start."""
        parallel = sweep.spec.backend.local.parallel
        pool = GpuPool(visible_gpus())
        if pool.total:
            for s in specs:
                need = run_gpus(s)
                if need > pool.total:
                    raise ConfigError(f"{sweep.path}: run {s.run.run_id} needs {need} GPUs (nodes x gpus), this "
                                      f"machine has {pool.total}", hint="Lower resources.gpus or use SLURM/Beaker.")
        queue = list(specs)
        jobs: list[Job] = []
        lock = threading.Lock()
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                with lock:
                    if not queue:
                        return
                    spec = queue.pop(0)
                gpus = pool.take(run_gpus(spec) if pool.total else 0, stop)
                if gpus is None:
                    return
                try:
                    self._run(sweep, spec, gpus, pool.total > 0, jobs, lock, on_job)
                finally:
                    pool.give(gpus)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(parallel)]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
        except KeyboardInterrupt:
            stop.set()
            self.cancel(jobs)
            for t in threads:
                t.join()
            raise
        return jobs

    def _run(self, sweep: Sweep, spec: RunSpec, gpus: list[str], pin: bool, jobs: list[Job],
             lock: threading.Lock, on_job: Callable[[Job], None] | None) -> None:
        """Start the run's node agents in one process group (node 0's pid is the job) and wait for all of them."""
        topo = Topology.of(spec.run.resources)
        log = open(spec.run_dir / LOG, "ab")  # noqa: SIM115 -- closed below
        try:
            envs = []
            for rank in range(topo.nodes):
                env = dict(os.environ)
                if pin:  # this node's GPUs only ("" for a CPU run on a GPU machine)
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(node_gpus(gpus, topo, rank))
                envs.append(env)
            procs = start_agents(self.commands(sweep, spec, gpus), envs, log)
            job = Job(spec.run.run_id, local_job_id(procs[0].pid))
            with lock:
                self.procs[spec.run.run_id] = procs
                jobs.append(job)
                if on_job:
                    on_job(job)
            for proc in procs:
                proc.wait()
        finally:
            log.close()

    def status(self, jobs: Sequence[Job]) -> dict[str, JobState]:
        """"running" while the very process that was started runs (PID and start time: a reused PID is not it)."""
        out: dict[str, JobState] = {}
        for job in jobs:
            pid, start = parse_local_job_id(job.job_id)
            out[job.job_id] = "running" if alive(pid, start) else "unknown"  # ended: the run directory tells how
        return out

    def cancel(self, jobs: Sequence[Job]) -> None:
        """SIGTERM to each run's process group: the trainer (or every rank, through its agent) saves a checkpoint
        and exits, so the run resumes on the next submit."""
        for job in jobs:
            pid, start = parse_local_job_id(job.job_id)
            if not alive(pid, start):
                continue  # ended; its PID may belong to someone else now
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                continue
        for proc in [p for procs in list(self.procs.values()) for p in procs]:
            try:
                proc.wait(timeout=180)  # the agents give their ranks SHUTDOWN_GRACE_S to checkpoint
            except subprocess.TimeoutExpired:
                proc.kill()

    def pull(self, job: Job, run_dir: Path) -> list[Path]:
        return []  # the run wrote its directory here

    def logs(self, target: LogTarget, follow: bool, tail: int | None, out: IO[str], poll: float) -> int:
        """The run's launcher.log (every local attempt appends to it), followed while its process runs."""
        o = tails.Out(out)
        log = target.run_dir / LOG
        resumed = tails.resumed_events(target.run_dir)
        note = f"# local run {target.run.run_id}: {log}"
        if len(target.jobs) > 1:
            note += f" ({len(target.jobs)} local attempts, appended)"
        if resumed:
            note += f"; resumed at step(s) {', '.join(str(r.get('step')) for r in resumed)}"
        o.line(note)
        job = target.jobs[-1] if target.jobs else None

        def running() -> bool:
            return (job is not None and tails.job_state(self, job) == "running"
                    and not tails.run_finished(target.run_dir))

        if not log.is_file() and not (follow and running()):
            raise NotStartedError(f"{log}: no log yet (run {target.run.run_id} was not started here)",
                                  hint=f"Submit it: python -m launcher submit {target.sweep.path}")
        ft = tails.FileTail(log)
        for line in tails.last(ft.read_all(), tail):
            o.line(line)
        if follow:
            tails.follow_files([(ft, o.line)], running, poll)
        return 0


def start_agents(argvs: Sequence[list[str]], envs: Sequence[dict[str, str]], log: IO[bytes]) -> list[
        subprocess.Popen[bytes]]:
    """Start a run's node agents in one process group of their own (out of the terminal's: Ctrl-C reaches the
    launcher only), so one killpg of the first one's pid reaches every agent of the run."""
    procs: list[subprocess.Popen[bytes]] = []
    for argv, env in zip(argvs, envs, strict=True):
        group = procs[0].pid if procs else 0
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=group))
    return procs


def run_gpus(spec: RunSpec) -> int:
    return spec.run.resources.nodes * spec.run.resources.gpus


def node_gpus(gpus: list[str], topology: Topology, node_rank: int) -> list[str]:
    """Node `node_rank`'s share of a run's GPUs."""
    per = len(gpus) // topology.nodes
    return gpus[node_rank * per:(node_rank + 1) * per]

