"""SLURM backend: rendered sbatch scripts (golden files), argv safety, parameter checks, array splitting, status
mapping; and, on a real cluster (`scripts/slurm_cluster.sh start`, then SLURM_CONF set), tiny runs submitted as
one job array and a preempted run that requeues, resumes and ends with the weights of an uninterrupted run.

Regenerate the golden files with TK_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission

from launcher.backends.base import BackendUnavailable, Job, RunSpec
from launcher.backends.slurm import SlurmBackend, TrainerJob, map_state
from launcher.sweep import Sweep, load_sweep
from launcher.topology import FORWARDED_SIGNALS, SHUTDOWN_GRACE_S, Rendezvous
from ni.errors import ConfigError
from tests.conftest import REPO, launch_specs, prebuild_tiny_model, start_requeued_soon

GOLDEN = Path(__file__).parent / "golden" / "slurm"
TINY = REPO / "trainer" / "configs" / "tiny-cpu.yaml"


def make_sweep(tmp: Path, text: str, name: str = "sweep.yaml") -> Sweep:
    path = tmp / name
    path.write_text(f"base: {TINY}\n" + text)
    return load_sweep(path)


def normalize(text: str, root: Path) -> str:
    for path, mark in ((sys.executable, "{PYTHON}"), (str(root.resolve()), "{RUNS}"), (str(REPO), "{REPO}")):
        text = text.replace(path, mark)
    return text


def check_golden(rendered: dict[str, str], root: Path, stem: str) -> None:
    for fname, text in rendered.items():
        golden = GOLDEN / f"{stem}-{fname}"
        got = normalize(text, root)
        if os.environ.get("TK_UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(got)
        assert golden.is_file(), f"missing {golden} (run with TK_UPDATE_GOLDEN=1)"
        assert got == golden.read_text(), f"{fname} differs from {golden}"
    expected = sorted(p.name for p in GOLDEN.glob(f"{stem}-sbatch-*.sh"))
    assert sorted(f"{stem}-{f}" for f in rendered) == expected


CPU4 = """name: cpu4
grid: {data.train_encoding: [instruct_input, tk_instruct]}
seeds: [1, 2]
resources: {gpus: 0, cpus: 2, memory: 8G, time: "00:30:00"}
backend:
  slurm:
    partition: debug
    account: lab
    qos: normal
    setup: ["module load cuda/12.1", "export HF_HOME=/scratch/hf"]
    array_parallelism: 2
"""


def test_render_cpu_sweep_one_array(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, CPU4)
    rendered = SlurmBackend().render(sweep, launch_specs(sweep, tmp_path / "runs"))
    assert list(rendered) == ["sbatch-0.sh"]
    assert "#SBATCH --array=0-3%2" in rendered["sbatch-0.sh"]
    check_golden(rendered, tmp_path / "runs", "cpu4")


def test_render_pyxis(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, """name: pyxis
seeds: [1, 2]
resources: {gpus: 8, cpus: 32, memory: 500G, time: "1-00:00:00"}
backend:
  slurm:
    partition: gpu
    constraint: h100
    container: {kind: pyxis, image: "nvcr.io#org/tk:1", mounts: ["/data:/data:ro"]}
""")
    root = tmp_path / "runs"
    specs = launch_specs(sweep, root)
    be = SlurmBackend()
    rendered = be.render(sweep, specs)
    text = rendered["sbatch-0.sh"]
    # submitit's wrapper runs on the host (its requeue needs scontrol, absent in the image: NVIDIA/pyxis#129) ...
    assert "--container" not in text and "#SBATCH --gpus-per-node=8" in text
    assert f"srun --unbuffered --output {root.resolve()}" in text and f"{sys.executable} -u -m submitit" in text
    check_golden(rendered, root, "pyxis")
    # ... and starts the trainer as a job step of its own on its node, in the image
    job = be.job_callable(sweep, specs[0].run.resources, specs)
    cfg = str(specs[0].config_path)
    runs = str(root.resolve() / "pyxis")
    assert job.argv(cfg, rdzv=Rendezvous("127.0.0.1", 29400), node="gpu-a17") == [
        "srun", "--overlap", "--nodes=1", "--ntasks=1", "--nodelist=gpu-a17", "--unbuffered",
        "--container-image=nvcr.io#org/tk:1", f"--container-mounts=/data:/data:ro,{runs}:{runs},{REPO}:{REPO}",
        f"--container-workdir={REPO}",
        "python", "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=8",
        "--master_addr=127.0.0.1", "--master_port=29400", f"--signals_to_handle={FORWARDED_SIGNALS}",
        f"--shutdown_timeout={SHUTDOWN_GRACE_S}", "-m", "trainer", "run", "--config", cfg]
    pickle.loads(pickle.dumps(job))  # what submitit ships to the node


def test_pyxis_mount_with_a_comma_is_refused(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, """name: comma
backend: {slurm: {container: {kind: pyxis, image: "nvcr.io#org/tk:1", mounts: ["/data/a,b:/data"]}}}
""")
    with pytest.raises(ConfigError, match="mounts: '/data/a,b:/data' has a comma"):
        SlurmBackend().check(sweep)
    sweep = make_sweep(tmp_path, "name: comma\nbackend: {slurm: {container: {kind: pyxis, image: tk}}}\n")
    with pytest.raises(ConfigError, match="a path with a comma cannot be mounted"):
        SlurmBackend().job_callable(sweep, sweep.runs[0].resources, launch_specs(sweep, tmp_path / "a,b"))


def test_pyxis_wrapper_forwards_usr2_to_the_step_but_never_sigterm(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """srun answers a SIGTERM by SIGKILLing its tasks, so the host-side wrapper must not pass its SIGTERM on (SLURM
    signals the trainer's step itself); a USR2 is passed on, and srun's 128 + N for a task killed by signal N counts
    as killed by N: the wrapper hands over to submitit's requeue. The child stands in for `srun` (it exits the way
    srun reports a task that died of USR2)."""
    import threading

    from launcher.sweep import Container

    calls: list[int] = []

    class Requeued(Exception):
        pass

    def submitit_handler(signum: int, frame: object) -> None:
        calls.append(signum)
        raise Requeued

    got = tmp_path / "got"
    child = [sys.executable, "-c", (
        "import signal, sys, time\n"
        f"def note(s, f):\n    open({str(got)!r}, 'a').write(signal.Signals(s).name + '\\n')\n"
        "    if s == signal.SIGUSR2: sys.exit(128 + s)\n"
        "signal.signal(signal.SIGTERM, note); signal.signal(signal.SIGUSR2, note)\n"
        "time.sleep(60)\n")]
    job = TrainerJob(Container(kind="pyxis", image="tk"))
    assert job.in_step
    monkeypatch.setattr(job, "argv", lambda *a, **k: child)
    before = {s: signal.signal(s, submitit_handler) for s in (signal.SIGUSR2, signal.SIGTERM)}
    timers = [threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM)),
              threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGUSR2))]
    try:
        for t in timers:
            t.start()
        with pytest.raises(Requeued):
            job(str(tmp_path / "launch.yaml"))
    finally:
        for t in timers:
            t.cancel()
        for sig, h in before.items():
            signal.signal(sig, h)
    assert got.read_text().split() == ["SIGUSR2"]  # the SIGTERM stayed with the wrapper
    assert calls == [signal.SIGUSR2]


def test_render_apptainer(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, """name: appt
seeds: [1, 2, 3]
resources: {gpus: 1, cpus: 8, memory: 32G, time: "12:00:00"}
backend:
  slurm:
    container: {kind: apptainer, image: /images/tk.sif, mounts: ["/data:/data"]}
""")
    root = tmp_path / "runs"
    specs = launch_specs(sweep, root)
    be = SlurmBackend()
    check_golden(be.render(sweep, specs), root, "apptainer")
    job = be.job_callable(sweep, specs[0].run.resources, specs)
    argv = job.argv(specs[0].config_path)
    assert argv[:3] == ["apptainer", "exec", "--nv"]
    assert argv[argv.index("/images/tk.sif") + 1:] == ["python", "-m", "trainer", "run", "--config",
                                                        str(specs[0].config_path)]
    assert argv[3:5] == ["--bind", "/data:/data"]


def test_render_two_nodes(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, """name: multi
resources: {gpus: 4, nodes: 2, cpus: 16, memory: 64G, time: "02:00:00"}
backend: {slurm: {partition: gpu}}
""")
    root = tmp_path / "runs"
    specs = launch_specs(sweep, root)
    be = SlurmBackend()
    rendered = be.render(sweep, specs)
    text = rendered["sbatch-0.sh"]
    assert "--array" not in text  # one run: a plain job
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text
    check_golden(rendered, root, "multinode")
    job = be.job_callable(sweep, specs[0].run.resources, specs)
    argv = job.argv("/r/launch.yaml", python="/py", node_rank=1, rdzv=Rendezvous("node-a", 23456))
    assert argv == ["/py", "-m", "torch.distributed.run", "--nnodes=2", "--node_rank=1", "--nproc_per_node=4",
                    "--master_addr=node-a", "--master_port=23456", f"--signals_to_handle={FORWARDED_SIGNALS}",
                    f"--shutdown_timeout={SHUTDOWN_GRACE_S}", "-m", "trainer", "run", "--config", "/r/launch.yaml"]


def test_metacharacters_stay_one_argument(tmp_path: Path) -> None:
    nasty = "a b;rm -rf x$(y)"
    root = tmp_path / nasty / "runs"
    sweep = make_sweep(tmp_path, f"""name: nasty
set: {{model.name_or_path: "{nasty}"}}
resources: {{cpus: 1, memory: 1G, time: "00:05:00"}}
""")
    specs = launch_specs(sweep, root)
    be = SlurmBackend()
    job = be.job_callable(sweep, specs[0].run.resources, specs)
    delayed = pickle.loads(pickle.dumps(DelayedSubmission(job, str(specs[0].config_path))))
    # the argv, run for real through a stand-in python that records what it received
    probe = tmp_path / "probe.py"
    out = tmp_path / "argv.json"
    probe.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n")
    probe.chmod(0o755)
    subprocess.run(delayed.function.argv(*delayed.args, python=str(probe)), check=True)
    received = json.loads(out.read_text())
    assert received == ["-m", "trainer", "run", "--config", str(specs[0].config_path)]
    from trainer.config import load_config

    assert load_config(received[-1], []).model.name_or_path == nasty
    # the rendered script quotes the folder: the shell splits the srun line into the intended words
    text = be.render(sweep, specs)["sbatch-0.sh"]
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    words = shlex.split(srun)
    assert words[-1] == str(root.resolve() / "nasty" / ".submitit")
    assert words[-4:-1] == ["-u", "-m", "submitit.core._submit"]


def test_misspelled_parameter_rejected_with_valid_names(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, CPU4)
    with pytest.raises(ValueError, match="partitoin") as e:
        SlurmBackend(extra_parameters={"partitoin": "x"}).render(sweep, launch_specs(sweep, tmp_path / "runs"))
    assert "Valid parameters are" in str(e.value) and "partition" in str(e.value).split("Valid")[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nbase: {TINY}\nbackend:\n  slurm:\n    partitoin: x\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:5: unknown key 'backend.slurm.partitoin'") as ce:
        load_sweep(bad)
    assert "partition" in (ce.value.hint or "")


def test_max_array_size_splits(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, """name: split
seeds: [1, 2, 3, 4, 5]
resources: {cpus: 1, memory: 1G, time: "00:05:00"}
backend: {slurm: {max_array_size: 2}}
""")
    rendered = SlurmBackend().render(sweep, launch_specs(sweep, tmp_path / "runs"))
    assert list(rendered) == ["sbatch-0.sh", "sbatch-1.sh", "sbatch-2.sh"]
    assert "#SBATCH --array=0-1%2" in rendered["sbatch-0.sh"] and "#SBATCH --array=0-1%2" in rendered["sbatch-1.sh"]
    assert "--array" not in rendered["sbatch-2.sh"]


def test_resource_groups_are_separate_arrays(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, """name: groups
variants:
  - {name: small, set: {seed: 1}}
  - {name: big, set: {seed: 2}, resources: {cpus: 8}}
  - {name: small2, set: {seed: 3}}
resources: {cpus: 1, memory: 1G, time: "00:05:00"}
""")
    rendered = SlurmBackend().render(sweep, launch_specs(sweep, tmp_path / "runs"))
    assert len(rendered) == 2
    assert "#SBATCH --array=0-1%2" in rendered["sbatch-0.sh"] and "--cpus-per-task=8" in rendered["sbatch-1.sh"]


def test_check_requires_image(tmp_path: Path) -> None:
    for kind in ("pyxis", "apptainer"):
        sweep = make_sweep(tmp_path, f"name: c\nbackend: {{slurm: {{container: {{kind: {kind}}}}}}}\n")
        with pytest.raises(ConfigError, match="no image"):
            SlurmBackend().check(sweep)
    sweep = make_sweep(tmp_path, "name: c\nbackend: {slurm: {container: {kind: docker, image: x}}}\n")
    with pytest.raises(ConfigError, match="docker"):
        SlurmBackend().check(sweep)


def test_units() -> None:
    """resources.memory and resources.time are read once, by the sweep's schema; SLURM takes GiB and minutes."""
    from pydantic import ValidationError

    from launcher.sweep import Resources

    gib = [Resources(memory=m).memory.gib for m in ("16G", "512M", "1T", "16GiB", "16gb")]  # type: ignore[arg-type]
    assert gib == [16, 0.5, 1024, 16, 16]
    minutes = [Resources(time=t).time.minutes for t in ("04:00:00", "1-00:00:30", "10:00", "00:00:01")]  # type: ignore[arg-type]
    assert minutes == [240, 1441, 10, 1]
    assert str(Resources(time="1-00:00:30").time) == "1-00:00:30"  # type: ignore[arg-type]
    assert Resources().model_dump()["memory"] == "16G"  # what a sweep file holds (and resource groups compare)
    with pytest.raises(ValidationError, match="not an amount of memory"):
        Resources(memory="lots")  # type: ignore[arg-type]
    assert map_state("CANCELLED by 0") == "cancelled" and map_state("OUT_OF_MEMORY") == "failed"
    assert map_state("REQUEUED") == "pending" and map_state("COMPLETING") == "running"  # SLURM reruns it itself
    assert map_state("PREEMPTED") == "preempted"
    assert map_state("WEIRD") == "unknown"


def test_checkpoint_requeues_same_call() -> None:
    job = TrainerJob()
    d = job.checkpoint("/r/launch.yaml")
    assert isinstance(d, DelayedSubmission) and d.function is job and d.args == ("/r/launch.yaml",)
    again = pickle.loads(pickle.dumps(d))
    assert isinstance(again.function, TrainerJob)


def test_status_squeue_then_sacct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "squeue").write_text("#!/bin/sh\necho '7_0 RUNNING'\necho '7_1 PENDING'\necho '9 COMPLETED'\n")
    (bin_ / "sacct").write_text("#!/bin/sh\necho '7_2|CANCELLED by 0'\necho '8|OUT_OF_MEMORY'\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    jobs = [Job("a", "7_0"), Job("b", "7_1"), Job("c", "7_2"), Job("d", "8"), Job("e", "9"), Job("f", "10")]
    assert SlurmBackend().status(jobs) == {"7_0": "running", "7_1": "pending", "7_2": "cancelled", "8": "failed",
                                           "9": "completed", "10": "unknown"}


# --- a real cluster ----------------------------------------------------------------------------------------


slurm = pytest.mark.slurm


TINY_RUN = """resources: {cpus: 1, memory: 3G, time: "00:15:00"}
set:
  data.max_instances_per_task: 20
  data.max_instances_per_eval_task: 2
  optim.per_device_batch_size: 4
  optim.warmup_steps: 0
  eval.batch_size: 8
  eval.max_new_tokens: 4
  logging.every_steps: 1
"""


def _wait(be: SlurmBackend, jobs: Sequence[Job], timeout: float, until: Sequence[str] = ("completed",)) -> dict:
    deadline = time.time() + timeout
    states: dict = {}
    while time.time() < deadline:
        states = be.status(jobs)
        if all(s in until or s in ("failed", "cancelled") for s in states.values()):
            return states
        time.sleep(2)
    return states


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("*_log.*")))


@slurm
@pytest.mark.slow
def test_cluster_array_of_four(tmp_path: Path, cluster: None) -> None:
    prebuild_tiny_model()
    sweep = make_sweep(tmp_path, "name: four\ngrid: {data.train_encoding: [instruct_input, tk_instruct]}\n"
                                 "seeds: [1, 2]\n" + TINY_RUN + "  optim.max_steps: 4\n  checkpoint.every_steps: 2\n")
    root = tmp_path / "runs"
    specs = launch_specs(sweep, root)
    assert len(specs) == 4
    be = SlurmBackend()
    t0 = time.time()
    jobs = be.submit(sweep, specs)
    assert [j.run_id for j in jobs] == [s.run.run_id for s in specs]
    array_ids = {j.job_id.split("_")[0] for j in jobs}
    assert len(array_ids) == 1, jobs  # ONE array
    assert sorted(j.job_id.split("_")[1] for j in jobs) == ["0", "1", "2", "3"]
    states = _wait(be, jobs, timeout=420)
    print(f"array of 4 tiny runs: {time.time() - t0:.0f}s")
    assert set(states.values()) == {"completed"}, f"{states}\n{_logs(root / 'four' / '.submitit')}"
    for s in specs:
        assert (s.run_dir / "DONE").is_file() and (s.run_dir / "metrics.json").is_file()
        assert json.loads((s.run_dir / "metrics.json").read_text())["num_examples"] > 0


def _steps(run_dir: Path) -> list[dict]:
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]




@slurm
@pytest.mark.parametrize("how", ["usr2", "scontrol-requeue"])
@pytest.mark.slow
def test_cluster_preempted_run_requeues_and_resumes(tmp_path: Path, cluster: None, how: str) -> None:
    """USR2: SLURM's notice before a preemption or time limit, submitit requeues; `scontrol requeue`: SLURM sends
    SIGTERM and requeues the job itself. Either way the run resumes and ends as an uninterrupted one."""
    prebuild_tiny_model()
    body = TINY_RUN + "  optim.max_steps: 24\n  checkpoint.every_steps: 8\n  seed: 3\n"
    slow = make_sweep(tmp_path, "name: preempt\n" + body +
                      "backend: {slurm: {setup: ['export TK_DEBUG_STEP_DELAY=0.5']}}\n", "slow.yaml")
    ref = make_sweep(tmp_path, "name: reference\n" + body, "ref.yaml")
    root = tmp_path / "runs"
    (spec,), (ref_spec,) = launch_specs(slow, root), launch_specs(ref, root)
    assert spec.run.run_id == ref_spec.run.run_id  # the same config
    be = SlurmBackend()
    t0 = time.time()
    (job,) = be.submit(slow, [spec])
    (ref_job,) = be.submit(ref, [ref_spec])
    deadline = time.time() + 300
    while time.time() < deadline and len([r for r in _steps(spec.run_dir) if "loss" in r]) < 3:
        time.sleep(1)
    done_before = [r["step"] for r in _steps(spec.run_dir) if "loss" in r]
    assert len(done_before) >= 3, f"no training progress\n{_logs(root / 'preempt' / '.submitit')}"
    if how == "usr2":  # what SLURM does before a time limit or a preemption: USR2 to the job's step
        subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    else:  # an admin's requeue (and SLURM's own preemption with PreemptMode=REQUEUE): SIGTERM, then requeued
        subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    t_signal = time.time()
    start_requeued_soon(job.job_id)
    states = _wait(be, [job, ref_job], timeout=480)
    print(f"preempt/requeue test: {time.time() - t0:.0f}s (signal after {t_signal - t0:.0f}s)")
    logs = _logs(root / "preempt" / ".submitit")
    assert states == {job.job_id: "completed", ref_job.job_id: "completed"}, f"{states}\n{logs}"
    records = _steps(spec.run_dir)
    resumed = [r for r in records if r.get("event") == "resumed"]
    assert resumed and resumed[0]["step"] >= 1, f"no resume in train_log.jsonl\n{logs}"
    assert "requeue" in logs.lower()  # submitit's "Requeued job" / slurmstepd's "DUE TO JOB REQUEUE"
    assert (spec.run_dir / "DONE").is_file() and (ref_spec.run_dir / "DONE").is_file()
    from safetensors.torch import load_file

    got = load_file(str(spec.run_dir / "model" / "model.safetensors"))
    want = load_file(str(ref_spec.run_dir / "model" / "model.safetensors"))
    assert got.keys() == want.keys()
    import torch

    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert json.loads((spec.run_dir / "metrics.json").read_text()) == json.loads(
        (ref_spec.run_dir / "metrics.json").read_text())


def test_after_exit_requeues_on_usr2_however_the_trainer_ended() -> None:
    from launcher.backends.slurm import after_exit

    usr2, term = int(signal.SIGUSR2), int(signal.SIGTERM)
    assert after_exit(0, [usr2]) == "done"
    assert after_exit(75, [usr2]) == "requeue"  # state saved
    assert after_exit(-usr2, [usr2]) == "requeue"  # killed by the second copy of the notice: resume from the last one
    assert after_exit(75, [term]) == "stopped" and after_exit(-term, [term]) == "stopped"
    assert after_exit(1, []) == "failed" and after_exit(-9, [term]) == "failed"


def test_wrapper_requeues_when_the_trainer_dies_of_the_forwarded_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race seen under load: the trainer is gone by signal before exiting 75; submitit must still requeue."""
    import threading

    calls: list[int] = []

    class Requeued(Exception):
        pass

    def submitit_handler(signum: int, frame: object) -> None:  # what submitit installs: checkpoint, requeue, exit
        calls.append(signum)
        raise Requeued

    job = TrainerJob()
    child = [sys.executable, "-c", "import time; time.sleep(60)"]  # default USR2 action: dies of the signal
    monkeypatch.setattr(job, "argv", lambda *a, **k: child)
    before = signal.signal(signal.SIGUSR2, submitit_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGUSR2))
    try:
        timer.start()
        with pytest.raises(Requeued):
            job("unused.yaml")
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR2, before)
    assert calls == [signal.SIGUSR2]


def _assert_one_complete_run(run_dir: Path, world_size: int, logs: str) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["world_size"] == world_size, f"{status}\n{logs}"
    rows = (run_dir / "predicted_examples.jsonl").read_text().splitlines()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(rows) == metrics["num_examples"] > 0 and (run_dir / "DONE").is_file()
    assert len({json.loads(r)["id"] for r in rows}) == len(rows)


@slurm
@pytest.mark.slow
def test_cluster_two_gpus_train_as_world_size_two(tmp_path: Path, cluster: None) -> None:
    """gpus: 2 on one node -> --gpus-per-node=2 scheduled on the cluster's stand-in GPUs, one task running a
    torch.distributed.run agent with 2 ranks (gloo on CPU here): one run of world size 2."""
    prebuild_tiny_model()
    run = TINY_RUN.replace("resources: {cpus: 1,", "resources: {gpus: 2, cpus: 1,")
    sweep = make_sweep(tmp_path, "name: twogpu\n" + run + "  optim.max_steps: 4\n  checkpoint.every_steps: 2\n")
    spec, job, states, logs = _submit_one_and_wait(sweep, tmp_path / "runs", 420, "gpus: 2 run on SLURM")
    assert states == {job.job_id: "completed"}, f"{states}\n{logs}"
    assert "--nproc_per_node=2" in logs and "--master_addr=127.0.0.1" in logs
    _assert_one_complete_run(spec.run_dir, 2, logs)


@slurm
@pytest.mark.slow
def test_cluster_two_nodes_train_as_one_run(tmp_path: Path, two_node_cluster: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """nodes: 2, gpus: 2 -> one SLURM job of two tasks, each a torch.distributed.run agent of 2 ranks (node rank
    from SLURM_NODEID, rendezvous at the first node's NodeAddr): one run of world size 4, one predictions file."""
    monkeypatch.setenv("SLURM_CONF", two_node_cluster)
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()
    assert sorted(nodes) == ["n1", "n2"]
    prebuild_tiny_model()
    run = TINY_RUN.replace("resources: {cpus: 1,", "resources: {nodes: 2, gpus: 2, cpus: 1,")
    sweep = make_sweep(tmp_path, "name: twonode\n" + run + "  optim.max_steps: 4\n  checkpoint.every_steps: 2\n")
    spec, job, states, logs = _submit_one_and_wait(sweep, tmp_path / "runs", 600, "nodes: 2 x gpus: 2 run on SLURM")
    assert states == {job.job_id: "completed"}, f"{states}\n{logs}"
    assert "--nnodes=2" in logs and "--node_rank=0" in logs and "--node_rank=1" in logs
    assert "--nproc_per_node=2" in logs
    assert "--master_addr=127.0.0.1" in logs  # n1's NodeAddr, not its name (which resolves nowhere)
    _assert_one_complete_run(spec.run_dir, 4, logs)


def test_squeue_that_does_not_answer_is_an_error_not_a_missing_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy slurmctld must not read as "no such job": `submit` would launch a second copy of a live run."""
    from launcher.backends import slurm as S

    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if argv[-1] == "404":
            return subprocess.CompletedProcess(argv, 1, "", "slurm_load_jobs error: Invalid job id specified\n")
        if argv[-1] == "7" and len(calls) >= 2:  # answers on the second try
            return subprocess.CompletedProcess(argv, 0, "7 RUNNING\n", "")
        return subprocess.CompletedProcess(argv, 1, "", "slurm_load_jobs error: Socket timed out on send/recv\n")

    monkeypatch.setattr(S.subprocess, "run", fake_run)
    monkeypatch.setattr(S.time, "sleep", lambda s: None)
    assert S._squeue(["squeue", "-j", "404"]) is None  # purged: the caller asks sacct / the run directory
    assert S._squeue(["squeue", "-j", "7"]) == "7 RUNNING\n"  # a blip: asked again
    calls.clear()
    with pytest.raises(BackendUnavailable, match=r"squeue: no answer from SLURM after 3 tries \(.*Socket timed out"):
        S._squeue(["squeue", "-j", "8"])
    assert len(calls) == 3


def test_slurm_escape_hatches(tmp_path: Path) -> None:
    """signal_delay_s (USR2 before the limit, and the ranks' grace), wckey, --gres for clusters without cons_tres,
    and more #SBATCH options through additional_parameters."""
    sweep = make_sweep(tmp_path, """name: hatches
resources: {gpus: 4, cpus: 8, memory: 32G, time: "01:00:00"}
backend:
  slurm:
    signal_delay_s: 300
    wckey: tk
    gres_style: gres
    additional_parameters: {exclusive: true, exclude: "node[1-2]", mail_type: END}
""")
    specs = launch_specs(sweep, tmp_path / "runs")
    be = SlurmBackend()
    text = be.render(sweep, specs)["sbatch-0.sh"]
    for line in ("#SBATCH --signal=USR2@300", "#SBATCH --wckey=tk", "#SBATCH --gres=gpu:4", "#SBATCH --exclusive",
                 "#SBATCH --exclude='node[1-2]'", "#SBATCH --mail-type=END"):
        assert line in text, line
    assert "--gpus-per-node" not in text
    job = be.job_callable(sweep, specs[0].run.resources, specs)
    assert "--shutdown_timeout=300" in job.argv("/r/l.yaml", rdzv=Rendezvous("h", 1))
    default = make_sweep(tmp_path, "name: d\nresources: {gpus: 4}\n", "d.yaml")
    text = be.render(default, launch_specs(default, tmp_path / "runs"))["sbatch-0.sh"]
    assert "#SBATCH --signal=USR2@120" in text and "#SBATCH --gpus-per-node=4" in text and "--wckey=''" in text


@pytest.mark.parametrize(("text", "needle"), [
    ("additional_parameters: {Bad Key: 1}", "not an sbatch option name"),
    ("additional_parameters: {nodes: 3}", "'nodes' is set by the launcher"),
    ("gres_style: tres", "gres_style"),
    ("signal_delay_s: 1", "signal_delay_s"),
    ("wkey: x", "unknown key 'backend.slurm.wkey'"),
])
def test_slurm_settings_rejected_with_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nbase: {TINY}\nbackend:\n  slurm:\n    {text}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:5: ") as e:
        load_sweep(bad)
    assert needle in str(e.value) + (e.value.hint or "")


def test_wrapper_requeues_as_soon_as_the_state_is_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After USR2 the wrapper hands over to submitit's requeue once status.json says preempted, without waiting
    for a trainer that is still tearing down (the time limit may come first)."""
    import threading

    calls: list[float] = []

    class Requeued(Exception):
        pass

    def submitit_handler(signum: int, frame: object) -> None:
        calls.append(time.time())
        raise Requeued

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launch = run_dir / "launch.yaml"
    launch.write_text(f"output_dir: {run_dir}\n")
    pid_file = tmp_path / "child.pid"
    child = [sys.executable, "-c", (
        "import json, os, signal, sys, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "def stop(s, f):\n"
        f"    open({str(run_dir / 'status.json')!r}, 'w').write(json.dumps({{'state': 'preempted'}}))\n"
        "    time.sleep(60)\n"  # a slow teardown
        "signal.signal(signal.SIGUSR2, stop)\n"
        "time.sleep(60)\n")]
    job = TrainerJob()
    monkeypatch.setattr(job, "argv", lambda *a, **k: child)
    before = signal.signal(signal.SIGUSR2, submitit_handler)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGUSR2))
    t0 = time.time()
    try:
        timer.start()
        with pytest.raises(Requeued):
            job(str(launch))
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR2, before)
        if pid_file.is_file():  # on SLURM the requeue ends the job's processes; here the test does
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert calls and calls[0] - t0 < 20  # not the child's 60 s teardown


SLURM_CLIENTS = {"scontrol", "sbatch", "srun", "squeue", "scancel", "sinfo", "sacct", "salloc", "sattach", "sbcast",
                 "sstat", "strigger", "sprio", "sshare", "sreport", "sacctmgr", "sdiag", "scrontab", "sh5util"}

# Stand-in for pyxis, which this machine lacks (no enroot, no pyxis SPANK plugin): an `srun` first on PATH that
# passes everything through to the real srun, except that a step with --container-image is started the way pyxis
# would put it in an image that has no SLURM client: PATH without scontrol & co., the working directory set by
# --container-workdir, every --container-mounts source required to exist. It logs each container start. What is
# real: SLURM, submitit, the host-side wrapper, the trainer's own job step (`srun --overlap ...`), the signals.
FAKE_PYXIS = r"""#!/bin/bash
set -euo pipefail
opts=(); image=""; mounts=""; workdir=""
while (( $# )) && [[ "$1" == -* ]]; do
  case "$1" in
    --container-image=*) image="${1#*=}" ;;
    --container-mounts=*) mounts="${1#*=}" ;;
    --container-workdir=*) workdir="${1#*=}" ;;
    *) opts+=("$1") ;;
  esac
  shift
done
[[ -z "$image" ]] && exec "$REAL_SRUN" "${opts[@]}" "$@"
IFS=, read -r -a ms <<<"$mounts"
for m in "${ms[@]}"; do [[ -e "${m%%:*}" ]] || { echo "pyxis stand-in: mount source ${m%%:*} missing" >&2; exit 1; }; done
seen="$(PATH="$CONTAINER_PATH" command -v scontrol || echo absent)"
echo "container step on ${SLURMD_NODENAME:-?}: image=$image workdir=$workdir scontrol=$seen" >>"$FAKE_PYXIS_LOG"
exec "$REAL_SRUN" "${opts[@]}" --chdir="$workdir" env PATH="$CONTAINER_PATH" "$@"
"""


def _container_path(root: Path) -> str:
    """PATH as the stand-in image has it: this venv's bin (its python), then the host's PATH with every SLURM client
    command left out (a directory holding one is replaced by a copy made of links to the rest)."""
    dirs = [str(Path(sys.executable).parent)]
    for i, d in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        src = Path(d)
        if not src.is_dir() or not any((src / c).exists() for c in SLURM_CLIENTS):
            dirs.append(d)
            continue
        copy = root / f"bin{i}"
        copy.mkdir(parents=True)
        for entry in src.iterdir():
            if entry.name not in SLURM_CLIENTS:
                (copy / entry.name).symlink_to(entry)
        dirs.append(str(copy))
    return os.pathsep.join(dirs)


def _pyxis_stand_in(tmp_path: Path, *setup: str) -> tuple[str, Path]:
    """The sweep's `backend:` for a pyxis run through FAKE_PYXIS, and the file where the stand-in logs each start."""
    fake = tmp_path / "fakepyxis"
    fake.mkdir()
    (fake / "srun").write_text(FAKE_PYXIS)
    (fake / "srun").chmod(0o755)
    container_path = _container_path(tmp_path / "image")
    assert shutil.which("scontrol", path=container_path) is None and shutil.which("scontrol") is not None
    log = tmp_path / "pyxis-stand-in.log"
    lines = [f"export PATH={fake}:$PATH", f"export REAL_SRUN={shutil.which('srun')}",
             f"export CONTAINER_PATH={container_path}", f"export FAKE_PYXIS_LOG={log}", *setup]
    return (f"backend: {{slurm: {{setup: {json.dumps(lines)}, container: {{kind: pyxis, "
            f"image: 'docker://ghcr.io#lab/tk:ci', mounts: ['{tmp_path}:{tmp_path}']}}}}}}\n"), log


@slurm
@pytest.mark.slow
def test_cluster_pyxis_trainer_without_scontrol_is_requeued_by_the_host_wrapper(tmp_path: Path, cluster: None) -> None:
    """container.kind pyxis (pyxis stood in for, see FAKE_PYXIS): the trainer runs in a step whose PATH has no
    scontrol. USR2 (SLURM's notice before the time limit) -> the trainer saves and stops, the host-side wrapper
    requeues through submitit's handler (`scontrol requeue` on the host), the run resumes and completes. (An admin's
    `scontrol requeue` sends SIGTERM, which the wrapper never forwards to the step's srun: see
    test_pyxis_wrapper_forwards_usr2_to_the_step_but_never_sigterm; on the cluster that path is the one of
    test_cluster_preempted_run_requeues_and_resumes.)"""
    prebuild_tiny_model()
    backend, log = _pyxis_stand_in(tmp_path, "export TK_DEBUG_STEP_DELAY=0.5")
    sweep = make_sweep(tmp_path, "name: pyxis\n" + TINY_RUN + "  optim.max_steps: 16\n  checkpoint.every_steps: 4\n"
                       + backend)
    root = tmp_path / "runs"
    (spec,) = launch_specs(sweep, root)
    be = SlurmBackend()
    t0 = time.time()
    (job,) = be.submit(sweep, [spec])
    deadline = time.time() + 300
    while time.time() < deadline and not any((spec.run_dir / "checkpoints").glob("*/COMPLETE")):
        time.sleep(1)
    folder = root / "pyxis" / ".submitit"
    assert any((spec.run_dir / "checkpoints").glob("*/COMPLETE")), f"no checkpoint\n{_logs(folder)}"
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    start_requeued_soon(job.job_id)
    states = _wait(be, [job], timeout=480)
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*_log.*")))
    print(f"pyxis stand-in USR2 test: {time.time() - t0:.0f}s")
    assert states == {job.job_id: "completed"}, f"{states}\n{_logs(folder)}"
    assert "--container" not in (folder / f"{job.job_id}_submission.sh").read_text()  # submitit's srun: host
    assert "+ srun --overlap --nodes=1 --ntasks=1" in logs and "'--container-image=docker://ghcr.io#lab/tk:ci'" in logs
    starts = log.read_text().splitlines()
    assert len(starts) == 2 and all("scontrol=absent" in s for s in starts), starts  # before and after the requeue
    # submitit's handler, in the host-side wrapper, ran scontrol
    assert f"Requeued job {job.job_id} (" in logs and "stopped at step" in logs and "state saved" in logs, logs
    resumed = [r for r in _steps(spec.run_dir) if r.get("event") == "resumed"]
    assert resumed and resumed[0]["step"] >= 4, logs
    assert (spec.run_dir / "DONE").is_file()


@slurm
@pytest.mark.slow
def test_cluster_array_cancelled_before_it_started_is_cancelled(tmp_path: Path, cluster: None) -> None:
    """An array whose tasks cannot start yet (--begin an hour on), cancelled: SLURM drops pending tasks cancelled
    one by one without a record, yet `status` says cancelled -- never missing -- and a new submit starts each run
    once more."""
    sweep = tmp_path / "never.yaml"
    sweep.write_text(f"name: never\nbase: {TINY}\nseeds: [1, 2, 3]\n"
                     "resources: {cpus: 1, memory: 1G, time: '00:15:00'}\n"
                     "backend: {slurm: {additional_parameters: {begin: now+3600}}}\n")
    runs = tmp_path / "runs"

    def launcher(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "launcher", *args, str(sweep), "--runs-root", str(runs)],
                              cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})

    try:
        r = launcher("submit", "--backend", "slurm")
        assert r.returncode == 0 and "3 to submit" in r.stdout, r.stdout + r.stderr
        assert launcher("status").stdout.count("pending") == 3
        jobs = [j for e in json.loads((runs / "never" / "manifest.json").read_text())["runs"].values() for j in e["jobs"]]
        r = launcher("cancel")
        assert r.returncode == 0 and "cancel sent" in r.stdout, r.stdout + r.stderr
        squeue = subprocess.run(["squeue", "--states=all", "-h", "-r", "-o", "%i %T", "-j", ",".join(jobs)],
                                capture_output=True, text=True).stdout
        assert not any(j in squeue.split() for j in jobs), squeue  # the tasks left no record
        r = launcher("status")
        assert r.stdout.count("cancelled before it started") == 3 and "missing" not in r.stdout, r.stdout
        r = launcher("submit", "--backend", "slurm")
        assert r.returncode == 0 and "3 to submit, 0 skipped" in r.stdout, r.stdout + r.stderr
        assert launcher("status").stdout.count("pending") == 3
    finally:
        launcher("cancel")


@slurm
def test_cluster_sbatch_refusal_is_one_line_and_records_nothing(tmp_path: Path, cluster: None) -> None:
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(f"name: bad\nbase: {TINY}\nresources: {{cpus: 1, memory: 1G, time: '00:15:00'}}\n"
                     "backend: {slurm: {partition: nosuch}}\n")
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", str(sweep), "--backend", "slurm", "--runs-root",
                        str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "sbatch:" in errors[0] and "invalid partition" in errors[0].lower(), r.stderr
    manifest = tmp_path / "runs" / "bad" / "manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["runs"] == {}


@slurm
@pytest.mark.slow
def test_cluster_pyxis_two_nodes_one_step_per_node(tmp_path: Path, two_node_cluster: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """pyxis (stood in for, FAKE_PYXIS) with nodes: 2, gpus: 1: each node's host-side wrapper starts the trainer's
    step on its own node (--nodelist), sharing the job's GPU there (--overlap): one run of world size 2."""
    monkeypatch.setenv("SLURM_CONF", two_node_cluster)
    prebuild_tiny_model()
    backend, log = _pyxis_stand_in(tmp_path)
    run = TINY_RUN.replace("resources: {cpus: 1,", "resources: {nodes: 2, gpus: 1, cpus: 1,")
    sweep = make_sweep(tmp_path, "name: pyxis2\n" + run + "  optim.max_steps: 4\n  checkpoint.every_steps: 2\n"
                       + backend)
    spec, job, states, logs = _submit_one_and_wait(sweep, tmp_path / "runs", 600, "pyxis stand-in, nodes: 2 x gpus: 1")
    assert states == {job.job_id: "completed"}, f"{states}\n{logs}"
    starts = sorted(log.read_text().splitlines())
    assert [s.split(":")[0] for s in starts] == ["container step on n1", "container step on n2"], starts
    assert all("scontrol=absent" in s for s in starts)
    _assert_one_complete_run(spec.run_dir, 2, logs)


@slurm
@pytest.mark.slow
def test_cluster_make_sweep_waits_then_pulls_and_reports(tmp_path: Path, cluster: None) -> None:
    """The front door on SLURM: `make sweep` returns when the sweep has ended, then pulls and reports (exit 0);
    NO_WAIT=1 returns at once with the next command."""
    prebuild_tiny_model()
    sweep = tmp_path / "front.yaml"
    sweep.write_text(f"name: front\nbase: {TINY}\n" + TINY_RUN + "  optim.max_steps: 2\nseeds: [1]\n")
    runs = tmp_path / "runs"
    make = ["make", "-C", str(REPO), "sweep", f"SWEEP={sweep}", "BACKEND=slurm", f"RUNS={runs}"]
    r = subprocess.run(make, capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = next(p for p in (runs / "front").iterdir() if (p / "DONE").is_file())
    assert (run_dir / "metrics.json").is_file() and (runs / "front" / "report").is_dir(), r.stdout[-3000:]
    assert "1 completed" in r.stdout, r.stdout[-3000:]
    r = subprocess.run([*make, "NO_WAIT=1", "SET=optim.max_steps=3"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "COLUMNS": "200"})
    try:
        assert r.returncode == 0 and "Next: python -m launcher logs" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    finally:
        subprocess.run([sys.executable, "-m", "launcher", "cancel", str(sweep), "--runs-root", str(runs), "--set",
                        "optim.max_steps=3"], cwd=REPO, capture_output=True, timeout=300)


def _submit_one_and_wait(sweep: Sweep, root: Path, timeout: float, what: str) -> tuple[RunSpec, Job, dict[str, str], str]:
    """Submit the sweep's one run to the cluster and wait for its end: (spec, job, end states, the job's logs)."""
    (spec,) = launch_specs(sweep, root)
    be = SlurmBackend()
    t0 = time.time()
    (job,) = be.submit(sweep, [spec])
    states = _wait(be, [job], timeout=timeout)
    print(f"{what}: {time.time() - t0:.0f}s")
    return spec, job, states, _logs(root / sweep.name / ".submitit")
