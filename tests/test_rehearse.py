"""`python -m launcher rehearse`: the real sweeps at toy scale keep their topology; a rehearsal really stops a run
after a checkpoint, resumes it and checks the result; its checks fail on a run directory that is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from launcher.rehearse import STEPS, Result, check_run, prepare, toy_config
from launcher.sweep import load_sweep
from tests.conftest import REPO


@pytest.mark.parametrize("name", ["encodings", "models", "lr_batch", "instances", "num_tasks"])
def test_toy_configs_keep_the_topology_and_the_recipe(name: str) -> None:
    sweep = load_sweep(REPO / "sweeps" / f"{name}.yaml")
    for run in sweep.runs:
        toy = toy_config(run.config, "t")
        assert toy.model.name_or_path == "tiny" and toy.data.root is None and toy.optim.max_steps == STEPS
        assert toy.world_size == run.config.world_size == run.resources.world_size
        assert toy.deepspeed == run.config.deepspeed and toy.precision == run.config.precision
        for key in ("per_device_batch_size", "grad_accum", "lr", "schedule"):
            assert getattr(toy.optim, key) == getattr(run.config.optim, key), key
        assert (toy.data.train_encoding, toy.data.test_encoding) == (run.config.data.train_encoding,
                                                                      run.config.data.test_encoding)
        assert toy.seed == run.config.seed and toy.data.track == "default"  # the embedded data has no xlingual


def test_baselines_stay_baselines() -> None:
    runs = [r for r in load_sweep(REPO / "sweeps" / "baselines.yaml").runs
            if r.config.model.name_or_path.startswith("baseline:")]
    assert len(runs) >= 3
    for run in runs:
        toy = toy_config(run.config, "t")
        assert toy.model == run.config.model and toy.data.root is None


def test_prepare_writes_each_run_apart_from_real_runs(tmp_path: Path) -> None:
    sweep = load_sweep(REPO / "sweeps" / "models.yaml")
    specs = prepare(sweep, tmp_path, limit=2)
    assert [s.run.run_id for s in specs] == [r.run_id for r in sweep.runs[:2]]  # named after the real runs
    for s in specs:
        written = s.config_path.read_text()
        assert s.run_dir == tmp_path / "models" / s.run.run_id and f"output_dir: {s.run_dir.resolve()}" in written


def test_checks_fail_on_a_wrong_run_directory(tmp_path: Path) -> None:
    sweep = load_sweep(REPO / "sweeps" / "models.yaml")
    (spec,) = prepare(sweep, tmp_path, limit=1)  # world size 2
    d = spec.run_dir
    (d / "status.json").write_text(json.dumps({"state": "completed", "world_size": 1}))
    (d / "DONE").write_text("")
    (d / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2)))
    (d / "metrics.json").write_text(json.dumps({"num_examples": 3}))
    (d / "predicted_examples.jsonl").write_text(json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "a"}) + "\n")
    result = Result(spec.run)
    check_run(spec, result)
    assert not result.ok
    text = "\n".join(result.notes)
    assert "world size 1, the sweep plans 2" in text and f"trained 2 steps, want {STEPS}" in text
    assert "did not resume" in text and "2 rows, 1 distinct ids, metrics say 3" in text
    assert f"status.json says total_steps None, want {STEPS}" in text  # the trainer writes the total it plans
    assert "FAIL" in result.line()


@pytest.mark.slow
def test_rehearse_two_nodes_checkpoint_resume_predict(tmp_path: Path) -> None:
    """A two-node run (two torch.distributed.run agents here), stopped after a checkpoint, resumed, checked."""
    sweep = tmp_path / "two.yaml"
    sweep.write_text(f"name: two\nbase: {REPO / 'trainer' / 'configs' / 'tiny-cpu.yaml'}\n"
                     "set: {optim.per_device_batch_size: 2, optim.grad_accum: 2}\n"
                     "resources: {nodes: 2, procs_per_node: 1, cpus: 1, memory: 2G}\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "launcher", "rehearse", str(sweep), "--runs-root", str(tmp_path / "rh")],
                       cwd=REPO, capture_output=True, text=True, timeout=1500)
    print(f"rehearse of one 2-node run: {time.time() - t0:.0f}s\n{r.stdout}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (line,) = [x for x in r.stdout.splitlines() if x.startswith(load_sweep(sweep).runs[0].run_id)]
    assert " ok " in line and "world 2/2" in line and "nodes 2x1" in line and f"steps {STEPS}" in line
    assert "resume ok@" in line and "complete" in line and "eff.batch 8" in line
    assert "1 of 1 runs rehearsed ok" in r.stdout


def _rehearse_on_slurm(tmp_path: Path, resources: str, env: dict[str, str], backend: str = "",
                       args: Sequence[str] = ()) -> tuple[str, str]:
    sweep = tmp_path / "onslurm.yaml"
    sweep.write_text(f"name: onslurm\nbase: {REPO / 'trainer' / 'configs' / 'tiny-cpu.yaml'}\n"
                     "set: {optim.per_device_batch_size: 2, optim.grad_accum: 2}\n"
                     f"resources: {{{resources}, cpus: 1, memory: 2G, time: '00:15:00'}}\n" + backend)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "launcher", "rehearse", str(sweep), "--backend", "slurm",
                        "--runs-root", str(tmp_path / "rh"), "--timeout", "600", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=1500, env=env)
    print(f"rehearse of one run ({resources}) on SLURM: {time.time() - t0:.0f}s\n{r.stdout}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 of 1 runs rehearsed ok" in r.stdout
    (line,) = [x for x in r.stdout.splitlines() if x.startswith(load_sweep(sweep).runs[0].run_id)]
    assert " ok " in line and f"steps {STEPS}" in line and "resume ok@" in line and "complete" in line, line
    return line, (tmp_path / "rh" / "onslurm" / ".submitit").as_posix()


@pytest.mark.slurm
@pytest.mark.slow
def test_rehearse_on_slurm_two_gpus_preempted_by_usr2_resumes(tmp_path: Path) -> None:
    """gpus: 2 -> one SLURM job on the stand-in GPUs, 2 ranks; USR2 after a checkpoint, submitit requeues, it
    resumes, finishes, predicts: the same checks as the local rehearsal. The sweep is written for a cluster with a
    `gpu` partition; `--partition debug` rehearses it on this one."""
    from tests.conftest import cluster_reason

    if reason := cluster_reason():
        pytest.skip(reason)
    line, folder = _rehearse_on_slurm(tmp_path, "gpus: 2", dict(os.environ),
                                      "backend: {slurm: {partition: gpu}}\n", ["--partition", "debug"])
    assert "#SBATCH --partition=debug" in "".join(p.read_text() for p in Path(folder).glob("*_submission.sh"))
    assert "world 2/2" in line and "nodes 1x2" in line and "eff.batch 8" in line, line
    assert "Requeued" in "".join(p.read_text() for p in Path(folder).glob("*_log.*"))  # submitit requeued it


@pytest.mark.slurm
@pytest.mark.slow
def test_rehearse_on_slurm_two_nodes_preempted_by_usr2_resumes(tmp_path: Path, two_node_cluster: str) -> None:
    """nodes: 2 x gpus: 1 on a cluster of two virtual nodes: one job of two tasks, world size 2, requeued, resumed."""
    line, _ = _rehearse_on_slurm(tmp_path, "nodes: 2, gpus: 1", {**os.environ, "SLURM_CONF": two_node_cluster})
    assert "world 2/2" in line and "nodes 2x1" in line and "eff.batch 8" in line, line


def test_rehearse_unknown_run_or_limit_is_one_line(tmp_path: Path) -> None:
    from launcher import cli
    from ni.errors import ConfigError

    sweep = str(REPO / "sweeps" / "models.yaml")
    with pytest.raises(ConfigError, match="no run nope in this sweep") as e:
        cli.main(["rehearse", sweep, "--run", "nope", "--runs-root", str(tmp_path)])
    assert "For example: --run " in (e.value.hint or "")
    with pytest.raises(ConfigError, match="--limit 0"):
        cli.main(["rehearse", sweep, "--limit", "0", "--runs-root", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # nothing written


def test_rehearse_on_slurm_checks_the_backend_settings_before_writing(tmp_path: Path) -> None:
    from launcher import cli
    from ni.errors import ConfigError

    sweep = tmp_path / "pyxis.yaml"
    sweep.write_text(f"name: pyxis\nbase: {REPO / 'trainer' / 'configs' / 'tiny-cpu.yaml'}\n"
                     "backend: {slurm: {container: {kind: pyxis}}}\n")
    with pytest.raises(ConfigError, match="container.kind is pyxis but no image is set"):
        cli.main(["rehearse", str(sweep), "--backend", "slurm", "--runs-root", str(tmp_path / "rh")])
    assert not (tmp_path / "rh").exists()  # nothing written


@pytest.mark.slurm
def test_rehearse_on_slurm_a_refused_job_is_one_failed_line(tmp_path: Path) -> None:
    from tests.conftest import cluster_reason

    if reason := cluster_reason():
        pytest.skip(reason)
    sweep = tmp_path / "nopart.yaml"
    sweep.write_text(f"name: nopart\nbase: {REPO / 'trainer' / 'configs' / 'tiny-cpu.yaml'}\n"
                     "backend: {slurm: {partition: no-such-partition}}\n")
    r = subprocess.run([sys.executable, "-m", "launcher", "rehearse", str(sweep), "--backend", "slurm",
                        "--runs-root", str(tmp_path / "rh")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    (line,) = [x for x in r.stdout.splitlines() if x.startswith(load_sweep(sweep).runs[0].run_id)]
    assert "FAIL" in line and "sbatch refused the job:" in r.stdout and "invalid partition" in r.stdout.lower()
    assert "Traceback" not in r.stderr and "0 of 1 runs rehearsed ok" in r.stdout


def test_rehearse_partition_account_qos_override_the_sweep(tmp_path: Path) -> None:
    """--partition/--account/--qos replace the sweep's for a rehearsal on SLURM (what sbatch gets); with the local
    backend they are refused in one line, before anything is written."""
    from launcher import cli
    from launcher.rehearse import SlurmRehearsal, prepare
    from ni.errors import ConfigError

    path = tmp_path / "gpuonly.yaml"
    path.write_text(f"name: gpuonly\nbase: {REPO / 'trainer' / 'configs' / 'tiny-cpu.yaml'}\n"
                    "backend: {slurm: {partition: gpu, account: lab, qos: high, constraint: h100}}\n")
    sweep = load_sweep(path)
    runner = SlurmRehearsal(sweep, 60, {"partition": "debug", "qos": "normal"})
    (script,) = runner.backend.render(runner.sweep, prepare(sweep, tmp_path / "rh", 1)).values()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --qos=normal" in script
    assert "#SBATCH --account=lab" in script and "#SBATCH --constraint=h100" in script  # the rest stays
    assert load_sweep(path).spec.backend.slurm.partition == "gpu"
    with pytest.raises(ConfigError, match="--partition applies to a rehearsal on SLURM only"):
        cli.main(["rehearse", str(path), "--partition", "debug", "--runs-root", str(tmp_path / "rh2")])
    assert not (tmp_path / "rh2").exists()
