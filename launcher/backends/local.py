"""Local backend: runs on this machine, one after another or N at a time, optionally in `docker run`.

GPUs are pinned per run with CUDA_VISIBLE_DEVICES when the machine has them. Ctrl-C sends SIGTERM to every
running trainer (which checkpoints and exits), waits for them, and leaves resumable state behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from launcher.backends.base import Job, JobState, RunSpec, shell_join, trainer_command
from launcher.sweep import Container, Sweep
from ni.errors import ConfigError
from ni.locks import alive, process_start


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def docker_command(container: Container, spec: RunSpec, gpus: list[str]) -> list[str]:
    """`docker run` of the trainer image; the run directory is mounted at the same path inside."""
    run_dir = str(spec.run_dir.resolve())
    argv = ["docker", "run", "--rm", "--init", "-v", f"{run_dir}:{run_dir}"]
    for mount in container.mounts:
        argv += ["-v", mount]
    if gpus:
        argv += ["--gpus", f"\"device={','.join(gpus)}\""]
    assert container.image is not None
    return [*argv, container.image, *trainer_command(spec.config_path.resolve(), python="python")[1:]]


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

    def __init__(self, on_update: Callable[[], None] | None = None, on_start: Callable[[Job], None] | None = None):
        self.on_update = on_update
        self.on_start = on_start
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, sweep: Sweep, spec: RunSpec, gpus: list[str]) -> list[str]:
        container = sweep.spec.backend.local.container
        if container.kind == "docker":
            return docker_command(container, spec, gpus)
        return trainer_command(spec.config_path.resolve())

    def check(self, sweep: Sweep) -> None:
        container = sweep.spec.backend.local.container
        if container.kind not in ("none", "docker"):
            raise ConfigError(f"{sweep.path}: backend.local.container.kind: '{container.kind}' is for SLURM",
                              hint="Locally use kind: docker or none.")
        if container.kind == "docker" and not container.image:
            raise ConfigError(f"{sweep.path}: backend.local.container.image is required with kind: docker",
                              hint="For example: image: tk-lab-trainer:<git-sha> (make image).")

    def render(self, sweep: Sweep, specs: Sequence[RunSpec]) -> dict[str, str]:
        return {f"{s.run.run_id}.local.sh": shell_join(self.command(sweep, s, [])) + "\n" for s in specs}

    def submit(self, sweep: Sweep, specs: Sequence[RunSpec]) -> list[Job]:
        """Run everything now (blocking), `parallel` at a time; returns when all have ended."""
        parallel = sweep.spec.backend.local.parallel
        gpus = visible_gpus()
        per_run = max(1, len(gpus) // parallel) if gpus else 0
        free = [gpus[i * per_run : (i + 1) * per_run] for i in range(parallel)] if gpus else [[] for _ in range(parallel)]
        queue = list(specs)
        jobs: list[Job] = []
        lock = threading.Lock()
        stop = threading.Event()

        def worker(slot: list[str]) -> None:
            while not stop.is_set():
                with lock:
                    if not queue:
                        return
                    spec = queue.pop(0)
                env = dict(os.environ)
                if slot:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(slot)
                log = open(spec.run_dir / "launcher.log", "ab")  # noqa: SIM115 -- closed below
                try:
                    proc = subprocess.Popen(self.command(sweep, spec, slot), stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
                    job = Job(spec.run.run_id, local_job_id(proc.pid))
                    with lock:
                        self.procs[spec.run.run_id] = proc
                        jobs.append(job)
                        if self.on_start:
                            self.on_start(job)
                    proc.wait()
                finally:
                    log.close()
                if self.on_update:
                    self.on_update()

        threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in free]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
                if self.on_update:
                    self.on_update()
        except KeyboardInterrupt:
            stop.set()
            self.cancel(jobs)
            for t in threads:
                t.join()
            raise
        return jobs

    def status(self, jobs: Sequence[Job]) -> dict[str, JobState]:
        """"running" while the very process that was started runs (PID and start time: a reused PID is not it)."""
        out: dict[str, JobState] = {}
        for job in jobs:
            pid, start = parse_local_job_id(job.job_id)
            out[job.job_id] = "running" if alive(pid, start) else "unknown"  # ended: the run directory tells how
        return out

    def cancel(self, jobs: Sequence[Job]) -> None:
        """SIGTERM: the trainer saves a checkpoint and exits, so the run resumes on the next submit."""
        for job in jobs:
            pid, start = parse_local_job_id(job.job_id)
            if not alive(pid, start):
                continue  # ended; its PID may belong to someone else now
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                continue
        for proc in list(self.procs.values()):
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()

