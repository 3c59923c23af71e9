"""The launcher: every sweep in the repo, bad input with file:line, run identity, idempotent local submission."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from launcher.manifest import Manifest
from launcher.sweep import load_sweep
from ni.errors import ConfigError
from tests.conftest import REPO, tiny_sweep
from trainer.config import load_config

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
CONFIGS = sorted((REPO / "trainer" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS + CONFIGS, ids=lambda p: p.name)
def test_every_yaml_in_the_repo_loads_and_opens_with_its_command(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith(("# make ", "# python ")), f"{path.name} must open with the command that runs it"
    if path.parent.name == "sweeps":
        sweep = load_sweep(path)
        assert sweep.runs and len({r.run_id for r in sweep.runs}) == len(sweep.runs)
    else:
        load_config(path)


def test_the_paper_groups_are_all_there() -> None:
    names = {p.stem for p in SWEEPS}
    assert {"encodings", "num_tasks", "instances", "models", "lr_batch", "eval_pretrained", "baselines", "debug"} <= names
    enc = load_sweep(REPO / "sweeps" / "encodings.yaml")
    assert len(enc.runs) == 6 * 5
    pretrained = load_sweep(REPO / "sweeps" / "eval_pretrained.yaml")
    assert all(not r.config.do_train for r in pretrained.runs) and len(pretrained.runs) == 4 * 11


# The effective batch (per-device batch x ranks x accumulation) of every training run of each shipped sweep: the
# paper's 16 unless the sweep studies the batch itself. A new training sweep must say what it trains with here.
EFFECTIVE_BATCH = {"encodings": {16}, "instances": {16}, "num_tasks": {16}, "models": {16}, "lr_batch": {8, 16, 32},
                   "debug": {32}, "debug-gpu": {16}}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_training_run_of_a_shipped_sweep_keeps_its_effective_batch(path: Path) -> None:
    runs = [r for r in load_sweep(path).runs if r.config.do_train]
    if not runs:
        assert path.stem not in EFFECTIVE_BATCH
        return
    batches = set()
    for r in runs:
        o = r.config.optim
        assert r.config.world_size == r.resources.nodes * r.resources.ranks_per_node
        batches.add(o.per_device_batch_size * r.config.world_size * o.grad_accum)
    assert batches == EFFECTIVE_BATCH[path.stem], path.name


def write(tmp: Path, text: str) -> Path:
    p = tmp / "s.yaml"
    p.write_text(text)
    return p


BASE = "base: {model: {name_or_path: tiny}, data: {max_instances_per_task: 8}}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n" + BASE + "grid:\n  optim.lr: [1, 2\n", r"s.yaml:\d+: invalid YAML"),
        ("name: x\n" + BASE + "resources:\n  gpu: 8\n", r"s.yaml:4: unknown key 'resources.gpu'.*Valid keys here: .*gpus"),
        ("name: x\n" + BASE + "grid:\n  optim.lr: []\n", r"expands to zero runs"),
        ("name: x\n" + BASE + "variants:\n  - {name: a}\n  - {name: a}\n", r"s.yaml:5: variant name 'a' is used twice"),
        ("name: x\n" + BASE + "zip:\n  optim.lr: [1, 2]\n  seed: [1]\n", r"s.yaml:3: zip: lists must have the same length"),
        ("name: x\nbase: nowhere.yaml\n", r"s.yaml:2: base: run config 'nowhere.yaml' not found"),
        ("name: x\n" + BASE + "grid:\n  optim.lrr: [1]\n", r"unknown key 'optim.lrr'"),
        ("name: x\n" + BASE + "grid:\n  data.train_encoding: [def_pos]\n", r"unknown encoding 'def_pos'"),
    ],
)
def test_bad_sweeps_fail_with_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        load_sweep(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_cli_bad_input_is_one_line_and_submits_nothing(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\n" + BASE + "grid:\n  optim.lr: []\n")
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", str(p), "--runs-root", str(tmp_path / "runs")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "zero runs" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_exclude_seeds_and_stable_ids(tmp_path: Path) -> None:
    text = ("name: x\n" + BASE + "grid:\n  optim.lr: [0.1, 0.2]\n  optim.grad_accum: [1, 2]\n"
            "exclude:\n  - {optim.lr: 0.2, optim.grad_accum: 2}\nseeds: [1, 2]\n")
    runs = load_sweep(write(tmp_path, text)).runs
    assert len(runs) == 3 * 2
    ids = {json.dumps(r.varied, sort_keys=True): r.run_id for r in runs}
    # editing one value changes only the runs it reaches
    edited = load_sweep(write(tmp_path, text.replace("[0.1, 0.2]", "[0.1, 0.3]"))).runs
    again = {json.dumps(r.varied, sort_keys=True): r.run_id for r in edited}
    unchanged = [k for k in ids if '"optim.lr": 0.1' in k]
    assert unchanged and all(again[k] == ids[k] for k in unchanged)
    assert len(set(again.values()) - set(ids.values())) == 4  # lr 0.3 x accum 1, 2 (the exclude named 0.2) x 2 seeds


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_run_ids_of_shipped_sweeps_are_the_ones_their_directories_carry(path: Path) -> None:
    """A run's id names its directory, so taking it from `RunConfig.digest` must not change it: still the first 10
    hex digits of sha256 over the sorted identity, as sweep.py computed it before."""
    for run in load_sweep(path).runs:
        identity = orjson.dumps(run.config.identity(), option=orjson.OPT_SORT_KEYS)
        assert run.run_id == hashlib.sha256(identity).hexdigest()[:10]


def test_shell_metacharacters_stay_one_literal_value(tmp_path: Path) -> None:
    nasty = "a b;rm -rf x$(y) `z` 'q'"
    text = f"name: x\nbase: {{model: {{name_or_path: {json.dumps(nasty)}}}}}\n"
    sweep = load_sweep(write(tmp_path, text))
    manifest = Manifest(tmp_path / "runs", sweep)
    spec = manifest.write_launch_config(sweep.runs[0])
    assert yaml.safe_load(spec.config_path.read_text())["model"]["name_or_path"] == nasty
    from launcher.backends.local import LocalBackend

    argv = LocalBackend().command(sweep, spec, [])
    assert argv[-2:] == ["--config", str(spec.config_path.resolve())] and nasty not in " ".join(argv)


def run_launcher(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.slow
def test_local_submission_is_idempotent(tmp_path: Path, embedded: Path) -> None:
    sweep_file = tiny_sweep(tmp_path / "s.yaml", embedded, "idem", more="grid:\n  seed: [1, 2]\n")
    runs = tmp_path / "runs"
    r = run_launcher("submit", str(sweep_file), "--runs-root", str(runs))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 to submit" in r.stdout
    manifest = orjson.loads((runs / "idem" / "manifest.json").read_bytes())
    assert len(manifest["runs"]) == 2 and all(len(e["jobs"]) == 1 for e in manifest["runs"].values())
    assert all((runs / "idem" / rid / "DONE").is_file() for rid in manifest["runs"])
    # again: everything completed, nothing submitted
    r = run_launcher("submit", str(sweep_file), "--runs-root", str(runs))
    assert r.returncode == 0 and "0 to submit" in r.stdout
    # one run lost its result: only that one is submitted again
    lost = sorted(manifest["runs"])[0]
    (runs / "idem" / lost / "DONE").unlink()
    r = run_launcher("submit", str(sweep_file), "--runs-root", str(runs))
    assert r.returncode == 0 and "1 to submit" in r.stdout, r.stdout
    again = orjson.loads((runs / "idem" / "manifest.json").read_bytes())
    assert len(again["runs"][lost]["jobs"]) == 2 and (runs / "idem" / lost / "DONE").is_file()
    # a run whose job is still alive is never duplicated
    (runs / "idem" / lost / "DONE").unlink()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        again["runs"][lost]["jobs"].append(f"local-{sleeper.pid}")
        (runs / "idem" / "manifest.json").write_bytes(orjson.dumps(again))
        r = run_launcher("submit", str(sweep_file), "--runs-root", str(runs))
        assert r.returncode == 0 and "0 to submit" in r.stdout and "running" in r.stdout
    finally:
        sleeper.kill()
    r = run_launcher("report", str(sweep_file), "--runs-root", str(runs))
    assert r.returncode == 0 and "rougeL" in r.stdout
    time.sleep(0)


def test_interrupted_beaker_submission_is_completed_by_the_next_submit(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the in-process Beaker fake (no server exists here): the second experiment.create fails, the
    manifest keeps the first; the next submit adds only the other two; pull + report read the results."""
    from launcher import backends, cli
    from launcher.backends.beaker import BeakerBackend
    from tests.beaker_fake import FakeBeakerClient

    class Flaky(FakeBeakerClient):
        fail_next_at = 2

        def create_experiment(self, spec, name, workspace):  # type: ignore[no-untyped-def]
            if len(self.created) + 1 == self.fail_next_at:
                self.fail_next_at = 0
                raise OSError("connection reset by peer")
            return super().create_experiment(spec, name, workspace)

    fake = Flaky()
    monkeypatch.setattr(backends, "get_backend", lambda name, **kw: BeakerBackend(client=fake))
    p = write(tmp_path, "name: bk\n" + BASE + "grid:\n  seed: [1, 2, 3]\n"
              "backend:\n  beaker: {workspace: ai2/x, clusters: [ai2/c], image: tk-lab-trainer}\n")
    runs = tmp_path / "runs"
    with pytest.raises(OSError):
        cli.main(["submit", str(p), "--backend", "beaker", "--runs-root", str(runs)])
    manifest = orjson.loads((runs / "bk" / "manifest.json").read_bytes())
    assert len(manifest["runs"]) == 1
    assert cli.main(["submit", str(p), "--backend", "beaker", "--runs-root", str(runs)]) == 0
    manifest = orjson.loads((runs / "bk" / "manifest.json").read_bytes())
    assert len(manifest["runs"]) == 3 and all(len(e["jobs"]) == 1 for e in manifest["runs"].values())
    assert len(fake.created) == 3
    assert cli.main(["submit", str(p), "--backend", "beaker", "--runs-root", str(runs)]) == 0
    assert len(fake.created) == 3  # completed on Beaker, even before pulling: never submitted again
    assert cli.main(["pull", str(p), "--runs-root", str(runs)]) == 0
    for run_id in manifest["runs"]:
        assert (runs / "bk" / run_id / "DONE").is_file() and (runs / "bk" / run_id / "metrics.json").is_file()


def test_the_cli_asks_a_backend_only_through_its_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A stand-in backend the CLI knows nothing of (under a registered name): submit records the jobs its callback
    hands over, also when submit fails part-way; plan, status, pull, logs and cancel reach it through the protocol."""
    from launcher import backends, cli
    from launcher.backends.base import Job

    calls: list[tuple[str, ...]] = []

    class StandIn:
        name, runs_here = "beaker", False

        def check(self, sweep: object) -> None:
            calls.append(("check",))

        def preflight_warnings(self, sweep: object) -> list[str]:
            return ["mind the gap"]

        def images(self, sweep: object) -> list[tuple[str, str]]:
            return []

        def render(self, sweep: object, specs: list) -> dict[str, str]:  # type: ignore[type-arg]
            return {f"{s.run.run_id}.txt": "rendered\n" for s in specs}

        def submit(self, sweep: object, specs: list, on_job=None) -> list[Job]:  # type: ignore[no-untyped-def,type-arg]
            jobs = []
            for s in specs:
                if calls == [("check",)] and jobs:  # the first submit fails after its first job
                    raise OSError("connection reset by peer")
                jobs.append(Job(s.run.run_id, f"job-{s.run.run_id}"))
                on_job(jobs[-1])
            calls.append(("submit", *(j.job_id for j in jobs)))
            return jobs

        def status(self, jobs: list[Job]) -> dict[str, str]:
            return {j.job_id: "running" for j in jobs}

        def cancel(self, jobs: list[Job]) -> None:
            calls.append(("cancel", *(j.job_id for j in jobs)))

        def pull(self, job: Job, run_dir: Path) -> list[Path]:
            calls.append(("pull", job.job_id))
            return [run_dir / "DONE"]

        def logs(self, target, follow, tail, out, poll) -> int:  # type: ignore[no-untyped-def]
            out.write(f"logs of {target.run.run_id}: {[j.job_id for j in target.jobs]} {follow} {tail}\n")
            return 0

    monkeypatch.setattr(backends, "get_backend", lambda name: StandIn())
    p = write(tmp_path, "name: si\n" + BASE + "grid:\n  seed: [1, 2]\n")
    a, b = (r.run_id for r in load_sweep(p).runs)
    runs = ["--runs-root", str(tmp_path / "runs")]
    assert cli.main(["plan", str(p), "--backend", "beaker", "--render", *runs]) == 0
    assert f"--- {a}.txt\nrendered" in capsys.readouterr().out
    with pytest.raises(OSError):
        cli.main(["submit", str(p), "--backend", "beaker", *runs])
    assert "warning: mind the gap" in capsys.readouterr().err
    manifest = orjson.loads((tmp_path / "runs" / "si" / "manifest.json").read_bytes())
    assert {k: (e["backend"], e["jobs"]) for k, e in manifest["runs"].items()} == {a: ("beaker", [f"job-{a}"])}
    assert cli.main(["submit", str(p), "--backend", "beaker", *runs]) == 0  # only the run not recorded
    assert calls[-1] == ("submit", f"job-{b}")
    capsys.readouterr()
    assert cli.main(["status", str(p), *runs]) == 0 and capsys.readouterr().out.count("running") == 2
    assert cli.main(["pull", str(p), *runs]) == 0 and "pulled 2 run(s)" in capsys.readouterr().out
    assert cli.main(["logs", str(p), b, "--tail", "7", *runs]) == 0
    assert capsys.readouterr().out == f"logs of {b}: ['job-{b}'] False 7\n"
    assert cli.main(["cancel", str(p), *runs]) == 0
    assert [c for c in calls if c[0] in ("pull", "cancel")] == [
        ("pull", f"job-{a}"), ("pull", f"job-{b}"), ("cancel", f"job-{a}"), ("cancel", f"job-{b}")]


@pytest.mark.slow
def test_ctrl_c_stops_local_runs_cleanly_and_they_resume(tmp_path: Path, embedded: Path) -> None:
    import signal

    sweep_file = tiny_sweep(tmp_path / "s.yaml", embedded, "intr", steps=30, instances=8)
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "submit", str(sweep_file), "--runs-root", str(runs)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TK_DEBUG_STEP_DELAY": "0.3"})
    run_id = load_sweep(sweep_file).runs[0].run_id
    log = runs / "intr" / run_id / "train_log.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and not (log.is_file() and b'"step":3' in log.read_bytes()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the launcher (the trainers run in their own sessions)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    status = orjson.loads((runs / "intr" / run_id / "status.json").read_bytes())
    assert status["state"] == "preempted" and status["step"] >= 3
    assert any((runs / "intr" / run_id / "checkpoints").glob("*/COMPLETE"))
    r = run_launcher("submit", str(sweep_file), "--runs-root", str(runs))
    assert r.returncode == 0 and "1 to submit" in r.stdout, r.stdout + r.stderr
    events = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "resumed"] == [status["step"]]
    assert (runs / "intr" / run_id / "DONE").is_file()
