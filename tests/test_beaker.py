"""The Beaker backend: specs through beaker-py's own classes, goldens, and the job lifecycle through a fake.

No Beaker server is reachable here: `tests.beaker_fake.FakeBeakerClient` plays one, returning real
beaker-py protobuf jobs. `test_real_submission` talks to a real Beaker and runs only with BEAKER_TOKEN set.
Regenerate the goldens with TK_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml
from beaker import (
    BeakerCancelationCode,
    BeakerDataMount,
    BeakerDataSource,
    BeakerEnvVar,
    BeakerExperimentSpec,
    BeakerImageSource,
    BeakerJob,
    BeakerJobPriority,
    BeakerResultSpec,
    BeakerSpecVersion,
    BeakerTaskContext,
    BeakerTaskResources,
    BeakerTaskSpec,
    BeakerWorkloadStatus,
)

from launcher.backends.base import Job, RunSpec
from launcher.backends.beaker import (
    CONFIG_ENV,
    LAUNCH_PATH,
    RESULT_PATH,
    WRAPPER,
    BeakerBackend,
    config_yaml,
    spec_from_json,
    spec_json,
)
from launcher.backends.beaker_jobs import attempt_state, job_state
from launcher.manifest import Manifest
from launcher.sweep import Sweep, load_sweep
from launcher.topology import Rendezvous, Topology, launch_argv, port_from
from ni.errors import ConfigError
from tests.beaker_fake import FakeBeakerClient

GOLDEN_DIR = Path(__file__).parent / "golden" / "beaker"
SECRET_VALUE = "hf_secret123"

SINGLE = """\
name: bk-single
base:
  model: {name_or_path: google/t5-base-lm-adapt}
  data: {train_encoding: instruct_pos_2_input, max_source_length: 1024}
  optim: {lr: 1.0e-4, per_device_batch_size: 2}
grid: {optim.lr: [1.0e-4, 3.0e-4, 1.0e-3]}
resources: {gpus: 1, nodes: 1, cpus: 8, memory: 64G, time: "12:00:00"}
backend:
  beaker:
    workspace: ai2/tk-instruct
    clusters: [ai2/jupiter, ai2/saturn]
    budget: ai2/oe-adapt
    priority: high
    preemptible: false
    image: tkuser/tk-instruct
    retries: 0
    env: {TOKENIZERS_PARALLELISM: "false", OMP_NUM_THREADS: "4"}
"""

MULTI = """\
name: bk-multi
base:
  model: {name_or_path: google/t5-xl-lm-adapt}
  deepspeed: {stage: 3}
  precision: bf16
resources: {gpus: 8, nodes: 2, cpus: 64, memory: 400G, time: "2-00:00:00"}
backend:
  beaker:
    workspace: ai2/tk-instruct
    clusters: [ai2/jupiter]
    budget: ai2/oe-adapt
    image: tkuser/tk-instruct
    retries: 3
    data_dataset: tkuser/natural-instructions-v2
    checkpoint_weka: oe-training-default
    secrets: {HF_TOKEN: my-hf-secret, WANDB_API_KEY: my-wandb-key}
    env: {NCCL_DEBUG: WARN}
    multinode_env: {NCCL_IB_HCA: "^=mlx5_bond_0", NCCL_SOCKET_IFNAME: ib}
"""
WEKA = "oe-training-default"


def make_sweep(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Sweep:
    path = tmp_path / name
    path.write_text(text)
    return load_sweep(path)


def run_specs(sweep: Sweep, root: Path) -> list[RunSpec]:
    return [Manifest(root, sweep).spec(r) for r in sweep.runs]


@pytest.fixture(autouse=True)
def _secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret value sits in the environment of every test: it must never reach a spec."""
    monkeypatch.setenv("HF_TOKEN", SECRET_VALUE)
    monkeypatch.setenv("WANDB_API_KEY", SECRET_VALUE)


@pytest.fixture
def single(tmp_path: Path) -> tuple[Sweep, list[RunSpec]]:
    sweep = make_sweep(tmp_path, SINGLE, "single.yaml")
    return sweep, run_specs(sweep, tmp_path / "runs")


@pytest.fixture
def multi(tmp_path: Path) -> tuple[Sweep, list[RunSpec]]:
    sweep = make_sweep(tmp_path, MULTI, "multi.yaml")
    return sweep, run_specs(sweep, tmp_path / "runs")


def task_env(spec: BeakerExperimentSpec) -> dict[str, BeakerEnvVar]:
    return {e.name: e for e in spec.tasks[0].env_vars or []}


# --- specs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["single", "multi"])
def test_specs_round_trip_through_beaker_py(which: str, request: pytest.FixtureRequest) -> None:
    sweep, specs = request.getfixturevalue(which)
    backend = BeakerBackend(client=FakeBeakerClient())
    backend.check(sweep)
    for rs in specs:
        spec = backend.build_spec(sweep, rs)
        assert isinstance(spec, BeakerExperimentSpec)
        data = spec.to_json()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            again = BeakerExperimentSpec.from_json(data)
        assert again.to_json() == data  # beaker-py's own JSON is a fixed point
        assert spec_from_json(data) == spec  # and the objects are equal (after the data-mount repair)
        assert json.loads(spec_json(spec)) == data


@pytest.mark.parametrize("which", ["single", "multi"])
def test_fast_rendering_writes_what_beaker_py_json_and_yaml_write(which: str, request: pytest.FixtureRequest) -> None:
    sweep, specs = request.getfixturevalue(which)
    for _ in range(2):  # the second time from the memo of YAML blocks
        for rs in specs:
            spec = BeakerBackend().build_spec(sweep, rs)
            assert spec_json(spec) == json.dumps(spec.to_json(), sort_keys=True, indent=2) + "\n"
            cfg = rs.run.config.model_copy(update={"output_dir": RESULT_PATH})
            assert config_yaml(cfg.model_dump(mode="json")) == cfg.to_yaml()


def test_spec_json_falls_back_to_json_where_orjson_writes_otherwise() -> None:
    spec = BeakerExperimentSpec(
        version=BeakerSpecVersion.v2, description="caf\u00e9 \u2603",
        tasks=[BeakerTaskSpec(name="t", image=BeakerImageSource(beaker="img"), context=BeakerTaskContext(),
                              result=BeakerResultSpec(path="/r"), command=["x", '": 1e5'],
                              resources=BeakerTaskResources(cpu_count=1e-05, gpu_count=0))],
    )
    assert spec_json(spec) == json.dumps(spec.to_json(), sort_keys=True, indent=2) + "\n"
    spec.tasks[0].resources.cpu_count = float("nan")  # type: ignore[union-attr]
    spec.description = "plain"
    assert spec_json(spec) == json.dumps(spec.to_json(), sort_keys=True, indent=2) + "\n"
    assert config_yaml({}) == yaml.safe_dump({}, sort_keys=False)
    data = {"a": {"b": [1, 2.5, None], "c": {}}, "d": "x: y", "e": 10**30}
    assert config_yaml(data) == yaml.safe_dump(data, sort_keys=False)


def test_spec_rules_single(single: tuple[Sweep, list[RunSpec]]) -> None:
    sweep, specs = single
    backend = BeakerBackend(client=FakeBeakerClient())
    for rs in specs:
        spec = backend.build_spec(sweep, rs)
        data = spec.to_json()
        assert spec.version == BeakerSpecVersion.v2 and data["version"] == "v2"
        assert len(spec.tasks) == 1
        task = spec.tasks[0]
        assert task.name == rs.run.run_id
        assert task.image.beaker == "tkuser/tk-instruct"
        assert data["tasks"][0]["constraints"]["cluster"] == ["ai2/jupiter", "ai2/saturn"]
        assert spec.budget == "ai2/oe-adapt"
        assert task.context.priority == BeakerJobPriority.high and data["tasks"][0]["context"]["priority"] == "high"
        # not preemptible: protected for the whole 12 h time limit; preempted tasks auto-resume (no deprecated field)
        assert "preemptible" not in data["tasks"][0]["context"]
        assert task.context.min_runtime == 12 * 3600 * 1_000_000_000 and task.context.auto_resume is True
        assert spec.retry is not None and spec.retry.allowed_task_retries == 0
        assert data["retry"] == {"allowedTaskRetries": 0}
        assert task.result is not None and task.result.path == RESULT_PATH
        assert task.resources is not None
        assert task.resources.gpu_count == 1 and task.resources.cpu_count == 8.0
        assert task.resources.memory == "64GiB"
        assert task.timeout == 12 * 3600 * 10**9
        assert not task.datasets  # no data_dataset: no mount
        assert not task.host_networking and task.replicas is None
        assert task.resources.shared_memory is None and task.synchronized_start_timeout is None  # one rank, one node
        # command: the wrapper, then exactly the trainer argv
        assert task.command == ["python", "-c", WRAPPER, LAUNCH_PATH, "1", "1", str(port_from(f"beaker-{rs.run.run_id}"))]
        # env values are strings; the run's config travels in TK_RUN_CONFIG with output_dir = /results
        for e in data["tasks"][0]["envVars"]:
            assert isinstance(e["name"], str)
            assert isinstance(e.get("value", ""), str) and isinstance(e.get("secret", ""), str)
        env = task_env(spec)
        assert env["OMP_NUM_THREADS"].value == "4"
        assert env["TOKENIZERS_PARALLELISM"].value == "false"
        cfg = yaml.safe_load(env[CONFIG_ENV].value or "")
        assert cfg["output_dir"] == RESULT_PATH
        assert cfg["optim"]["lr"] == rs.run.config.optim.lr
        assert cfg["data"]["root"] is None  # unchanged without a data dataset
        assert cfg["checkpoint"]["dir"] is None  # no checkpoint_weka: checkpoints stay in /results
        assert rs.run.config.output_dir is None  # the planned run is not mutated


def test_spec_rules_multi_node(multi: tuple[Sweep, list[RunSpec]]) -> None:
    sweep, specs = multi
    spec = BeakerBackend(client=FakeBeakerClient()).build_spec(sweep, specs[0])
    task = spec.tasks[0]
    data = spec.to_json()["tasks"][0]
    assert task.replicas == 2 and data["replicas"] == 2
    assert task.leader_selection is True and data["leaderSelection"] is True
    assert task.host_networking is True and data["hostNetworking"] is True
    assert task.propagate_failure and task.propagate_preemption
    assert task.resources is not None and task.resources.gpu_count == 8  # GPUs per node
    assert task.resources.shared_memory == "10GiB" and data["resources"]["sharedMemory"] == "10GiB"
    assert task.synchronized_start_timeout == 600 * 10**9  # replicas start together or the task fails
    env = task_env(spec)
    assert env["NCCL_IB_HCA"].value == "^=mlx5_bond_0" and env["NCCL_SOCKET_IFNAME"].value == "ib"
    assert task.command is not None and task.command[3:6] == [LAUNCH_PATH, "2", "8"]
    assert "BEAKER_REPLICA_RANK" in WRAPPER and "BEAKER_LEADER_REPLICA_HOSTNAME" in WRAPPER
    assert "launch_argv" in WRAPPER  # launcher.topology's launch, as on SLURM and locally
    assert task.timeout == 2 * 86400 * 10**9
    assert spec.retry is not None and spec.retry.allowed_task_retries == 3
    # NI data: a dataset mount at /data, and the config reads from it; checkpoints: the Weka bucket, read-write
    assert task.datasets == [BeakerDataMount(source=BeakerDataSource(beaker="tkuser/natural-instructions-v2"),
                                             mount_path="/data"),
                             BeakerDataMount(source=BeakerDataSource(weka=WEKA), mount_path=f"/weka/{WEKA}")]
    assert data["datasets"] == [{"mountPath": "/data", "source": {"beaker": "tkuser/natural-instructions-v2"}},
                                {"mountPath": f"/weka/{WEKA}", "source": {"weka": WEKA}}]
    cfg = yaml.safe_load(task_env(spec)[CONFIG_ENV].value or "")
    assert cfg["data"]["root"] == "/data" and cfg["output_dir"] == RESULT_PATH
    assert cfg["checkpoint"]["dir"] == f"/weka/{WEKA}/tk-lab/bk-multi/{specs[0].run.run_id}/checkpoints"
    assert cfg["deepspeed"]["stage"] == 3
    # secrets by name only
    env = task_env(spec)
    assert env["HF_TOKEN"] == BeakerEnvVar(name="HF_TOKEN", secret="my-hf-secret")
    assert env["WANDB_API_KEY"] == BeakerEnvVar(name="WANDB_API_KEY", secret="my-wandb-key")
    assert {"name": "HF_TOKEN", "secret": "my-hf-secret"} in data["envVars"]


def test_no_secret_value_anywhere(multi: tuple[Sweep, list[RunSpec]], single: tuple[Sweep, list[RunSpec]]) -> None:
    assert os.environ["HF_TOKEN"] == SECRET_VALUE
    fake = FakeBeakerClient()
    backend = BeakerBackend(client=fake)
    for sweep, specs in (multi, single):
        for text in backend.render(sweep, specs).values():
            assert SECRET_VALUE not in text
        backend.submit(sweep, specs)
    assert fake.created
    for c in fake.created:
        assert SECRET_VALUE not in c.spec_json
        assert SECRET_VALUE not in repr(c.spec)


def test_render_matches_goldens(single: tuple[Sweep, list[RunSpec]], multi: tuple[Sweep, list[RunSpec]]) -> None:
    backend = BeakerBackend(client=FakeBeakerClient())
    rendered: dict[str, str] = {}
    for sweep, specs in (single, multi):
        out = backend.render(sweep, specs)
        assert sorted(out) == sorted(f"{rs.run.run_id}.beaker.json" for rs in specs)
        rendered.update(out)
    assert len(rendered) == 4
    if os.environ.get("TK_UPDATE_GOLDEN"):
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        for old in GOLDEN_DIR.glob("*.beaker.json"):
            old.unlink()
        for name, text in rendered.items():
            (GOLDEN_DIR / name).write_text(text)
    stored = {p.name: p.read_text() for p in GOLDEN_DIR.glob("*.beaker.json")}
    assert sorted(stored) == sorted(rendered), "run ids changed: regenerate with TK_UPDATE_GOLDEN=1 if intended"
    for name, text in rendered.items():
        assert text == stored[name], f"{name} differs from tests/golden/beaker/{name}"
        assert spec_from_json(json.loads(text)).to_json() == json.loads(text)


def test_render_has_no_network_and_is_deterministic(single: tuple[Sweep, list[RunSpec]]) -> None:
    sweep, specs = single
    a = BeakerBackend().render(sweep, specs)  # no client: rendering never constructs one
    b = BeakerBackend().render(sweep, specs)
    assert a == b


METACHARS = "a b; rm -rf / && echo $(whoami) `id` 'q' \"dq\" | cat > /tmp/x * ? ~ \\ \n second line"


def test_shell_metacharacters_stay_literal(tmp_path: Path) -> None:
    text = SINGLE.replace('OMP_NUM_THREADS: "4"', f'OMP_NUM_THREADS: "4", WEIRD: {json.dumps(METACHARS)}')
    text = text.replace("grid: {optim.lr: [1.0e-4, 3.0e-4, 1.0e-3]}",
                        f"set: {{model.tokenizer: {json.dumps(METACHARS)}}}")
    sweep = make_sweep(tmp_path, text)
    (rs,) = run_specs(sweep, tmp_path / "runs")
    spec = BeakerBackend().build_spec(sweep, rs)
    env = task_env(spec)
    assert env["WEIRD"].value == METACHARS  # one literal value, untouched
    assert yaml.safe_load(env[CONFIG_ENV].value or "")["model"]["tokenizer"] == METACHARS
    cmd = spec.tasks[0].command
    assert cmd is not None and len(cmd) == 7
    assert cmd[0] == "python" and cmd[1] == "-c"  # no shell anywhere
    assert not any(c in ("sh", "bash", "/bin/sh", "/bin/bash") for c in cmd)
    data = json.loads(spec_json(spec))
    assert {"name": "WEIRD", "value": METACHARS} in data["tasks"][0]["envVars"]


def _wrapper_argv(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> list[str]:
    """Run the task's wrapper (in this process) up to its exec, and return what it would exec."""
    execd: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: execd.append(list(argv)))
    monkeypatch.setattr(sys, "argv", ["-c", *args])
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    exec(compile(WRAPPER, "<wrapper>", "exec"), {})
    return execd[0]


def test_wrapper_writes_config_and_execs_the_topologys_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task's wrapper, run for real up to its exec: one rank is the trainer; 2 nodes x 4 are torchrun agents
    with Beaker's replica rank and leader host and the spec's port."""
    launch = tmp_path / "run" / "launch.yaml"
    payload = f"model: {{name_or_path: {json.dumps(METACHARS)}}}\n"
    argv = _wrapper_argv(monkeypatch, [str(launch), "1", "1", "12345"], {CONFIG_ENV: payload})
    assert launch.read_text() == payload
    assert argv == [sys.executable, "-m", "trainer", "run", "--config", str(launch)]
    argv = _wrapper_argv(monkeypatch, [str(launch), "2", "4", "23456"],
                         {CONFIG_ENV: payload, "BEAKER_REPLICA_RANK": "1", "BEAKER_LEADER_REPLICA_HOSTNAME": "lead-0"})
    assert argv == launch_argv(Topology(2, 4), launch, python=sys.executable, node_rank=1,
                               rendezvous=Rendezvous("lead-0", 23456))
    assert "--nnodes=2" in argv and "--nproc_per_node=4" in argv and "--node_rank=1" in argv
    argv = _wrapper_argv(monkeypatch, [str(launch), "1", "8", "23456"], {CONFIG_ENV: payload})
    assert "--master_addr=127.0.0.1" in argv and "--nproc_per_node=8" in argv


@pytest.mark.parametrize(
    ("drop", "needle"),
    [("    image: tkuser/tk-instruct\n", "image"),
     ("    workspace: ai2/tk-instruct\n", "workspace"),
     ("    clusters: [ai2/jupiter, ai2/saturn]\n", "clusters")],
)
def test_check_errors(tmp_path: Path, drop: str, needle: str) -> None:
    assert drop in SINGLE
    sweep = make_sweep(tmp_path, SINGLE.replace(drop, ""))
    with pytest.raises(ConfigError) as e:
        BeakerBackend(client=FakeBeakerClient()).check(sweep)
    msg = str(e.value)
    assert f"backend.beaker.{needle}" in msg and "For example:" in msg and "\n" not in msg
    with pytest.raises(ConfigError):  # submit checks first and creates nothing
        fake = FakeBeakerClient()
        BeakerBackend(client=fake).submit(sweep, run_specs(sweep, tmp_path / "runs"))
    assert not fake.created


def test_check_rejects_bad_time_and_env_secret_clash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resources.time"):  # refused where the sweep is read (issue 14)
        make_sweep(tmp_path, SINGLE.replace('time: "12:00:00"', 'time: "soon"'))
    sweep = make_sweep(tmp_path, SINGLE.replace("OMP_NUM_THREADS: \"4\"", "OMP_NUM_THREADS: \"4\", HF_TOKEN: x")
                       .replace("    retries: 0\n", "    retries: 0\n    secrets: {HF_TOKEN: my-hf-secret}\n"))
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        BeakerBackend().check(sweep)


def test_min_runtime_is_a_duration_read_with_the_sweep(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, SINGLE.replace("    retries: 0\n", "    retries: 0\n    min_runtime: \"1-02:00:00\"\n"))
    spec = BeakerBackend(client=FakeBeakerClient()).build_spec(sweep, run_specs(sweep, tmp_path / "runs")[0])
    assert spec.tasks[0].context.min_runtime == 26 * 3600 * 1_000_000_000
    with pytest.raises(ConfigError, match="backend.beaker.min_runtime") as e:
        make_sweep(tmp_path, SINGLE.replace("    retries: 0\n", "    retries: 0\n    min_runtime: 2h\n"))
    assert "\n" not in str(e.value)


def with_weka(text: str, extra: str = "") -> str:
    return text.replace("    retries: 0\n", f"    retries: 0\n    checkpoint_weka: {WEKA}\n{extra}")


def test_checkpoint_dirs_are_one_per_run_and_keep_the_run_ids(tmp_path: Path,
                                                              single: tuple[Sweep, list[RunSpec]]) -> None:
    plain, _ = single
    sweep = make_sweep(tmp_path, with_weka(SINGLE, "    checkpoint_prefix: /lab/tk//\n"))
    assert [r.run_id for r in sweep.runs] == [r.run_id for r in plain.runs]  # checkpoint.dir is no part of the id
    backend = BeakerBackend()
    dirs = []
    for rs in run_specs(sweep, tmp_path / "runs"):
        spec = backend.build_spec(sweep, rs)
        task = spec.tasks[0]
        assert task.datasets == [BeakerDataMount(source=BeakerDataSource(weka=WEKA), mount_path=f"/weka/{WEKA}")]
        assert task.result is not None and task.result.path == RESULT_PATH  # everything else: the result dataset
        cfg = yaml.safe_load(task_env(spec)[CONFIG_ENV].value or "")
        assert cfg["output_dir"] == RESULT_PATH
        dirs.append(cfg["checkpoint"]["dir"])
        assert task_env(spec)["TK_CACHE_DIR"].value == f"/weka/{WEKA}/lab/tk/tk-cache"  # one encoded cache per sweep
        assert spec_from_json(spec.to_json()) == spec
    assert dirs == [f"/weka/{WEKA}/lab/tk/bk-single/{r.run_id}/checkpoints" for r in sweep.runs]
    mine = make_sweep(tmp_path, with_weka(SINGLE).replace("    env: {", "    env: {TK_CACHE_DIR: /weka/elsewhere, "))
    assert task_env(backend.build_spec(mine, run_specs(mine, tmp_path / "runs")[0]))["TK_CACHE_DIR"].value == \
        "/weka/elsewhere"  # the sweep's own setting wins
    # a predict-only run has no checkpoints: no mount, no checkpoint.dir
    sweep = make_sweep(tmp_path, with_weka(SINGLE).replace("  optim: {", "  do_train: false\n  optim: {"))
    spec = backend.build_spec(sweep, run_specs(sweep, tmp_path / "runs")[0])
    assert not spec.tasks[0].datasets and "TK_CACHE_DIR" not in task_env(spec)
    assert yaml.safe_load(task_env(spec)[CONFIG_ENV].value or "")["checkpoint"]["dir"] is None


@pytest.mark.parametrize(("setting", "needle"), [
    ("checkpoint_weka: oe/training", "backend.beaker.checkpoint_weka: 'oe/training' is not a Weka bucket name"),
    ("checkpoint_prefix: ../up", "backend.beaker.checkpoint_prefix: '../up' is not a relative folder path"),
    ("checkpoint_wekaa: x", "unknown key 'backend.beaker.checkpoint_wekaa'"),
])
def test_checkpoint_settings_are_checked(tmp_path: Path, setting: str, needle: str) -> None:
    text = SINGLE.replace("    retries: 0\n", f"    retries: 0\n    {setting}\n")
    with pytest.raises(ConfigError) as e:
        make_sweep(tmp_path, text)
    assert needle in str(e.value) and "\n" not in str(e.value)
    line = text.splitlines().index(f"    {setting}") + 1
    assert str(e.value).startswith(f"{tmp_path / 'sweep.yaml'}:{line}: ")  # the line of the offending key


def test_preemptible_training_without_weka_warns_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from launcher import cli

    preemptible = SINGLE.replace("    preemptible: false\n", "")
    backend = BeakerBackend()
    assert backend.preflight_warnings(make_sweep(tmp_path, SINGLE)) == []  # not preemptible
    assert backend.preflight_warnings(make_sweep(tmp_path, with_weka(preemptible))) == []
    predict_only = preemptible.replace("  optim: {", "  do_train: false\n  optim: {")
    assert backend.preflight_warnings(make_sweep(tmp_path, predict_only)) == []
    (tmp_path / "p.yaml").write_text(preemptible)
    assert cli.main(["plan", str(tmp_path / "p.yaml"), "--backend", "beaker"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1  # one line for the sweep, not one per run
    assert "restarts at step 0" in warned[0]
    assert "set backend.beaker.checkpoint_weka, for example: checkpoint_weka: " in warned[0]


# --- job lifecycle through the fake ---------------------------------------------------------------------


def submit_through_fake(sweep: Sweep, specs: list[RunSpec], scripts: dict[str, str]
                        ) -> tuple[FakeBeakerClient, BeakerBackend, list[Job]]:
    """Submit to a fake Beaker whose jobs follow `scripts` (run id -> what happens to its job)."""
    fake = FakeBeakerClient(scripts)
    backend = BeakerBackend(client=fake)
    return fake, backend, backend.submit(sweep, specs)


def test_end_to_end_through_fake(single: tuple[Sweep, list[RunSpec]]) -> None:
    sweep, specs = single
    ok, bad, resumed = (rs.run.run_id for rs in specs)
    fake, backend, jobs = submit_through_fake(sweep, specs, {ok: "succeed", bad: "fail", resumed: "preempt-then-succeed"})
    assert [j.run_id for j in jobs] == [ok, bad, resumed]
    assert [c.name for c in fake.created] == [f"bk-single-{r}" for r in (ok, bad, resumed)]
    assert all(c.workspace == "ai2/tk-instruct" for c in fake.created)
    for c, rs in zip(fake.created, specs, strict=True):
        assert c.spec == backend.build_spec(sweep, rs)  # what was sent is the rendered spec

    states = backend.status(jobs)
    assert states == {jobs[0].job_id: "completed", jobs[1].job_id: "failed", jobs[2].job_id: "completed"}

    # the resumed run really had a preempted job first: real beaker-py protobuf jobs, newest last
    history = fake.list_jobs(jobs[2].job_id)
    assert all(isinstance(j, BeakerJob) for j in history) and len(history) == 2
    assert history[0].status.canceled_code == BeakerCancelationCode.system_preemption
    assert job_state(history[0]) == "preempted" and job_state(history[1]) == "completed"

    for job, rs in zip(jobs, specs, strict=True):
        written = backend.pull(job, rs.run_dir)
        assert {p.name for p in written} <= {p.name for p in rs.run_dir.iterdir()}
        assert not list(rs.run_dir.glob(".*.tmp"))  # atomic writes leave no temp files
    ok_dir, bad_dir, resumed_dir = (rs.run_dir for rs in specs)
    for d in (ok_dir, resumed_dir):
        assert (d / "DONE").is_file()
        rows = [json.loads(line) for line in (d / "predicted_examples.jsonl").read_text().splitlines()]
        assert rows and all("prediction" in r and "Instance" in r for r in rows)
        assert json.loads((d / "metrics.json").read_text())["overall"]["rougeL"] == 100.0
        assert json.loads((d / "status.json").read_text())["state"] == "completed"
        assert yaml.safe_load((d / "config.yaml").read_text())["output_dir"] == RESULT_PATH
    assert json.loads((bad_dir / "status.json").read_text())["state"] == "failed"
    assert not (bad_dir / "DONE").exists() and not (bad_dir / "metrics.json").exists()


def test_preempted_run_resumes_from_its_weka_checkpoint(tmp_path: Path) -> None:
    """Beaker gives the resumed job a fresh, empty result dataset, but the run's checkpoint folder on Weka persists:
    the fake plays the trainer's run directory (trainer.rundir) on both, and the resumed job continues at step 10."""
    sweep = make_sweep(tmp_path, with_weka(SINGLE))
    specs = run_specs(sweep, tmp_path / "runs")
    resumed, stopped, plain = (rs.run.run_id for rs in specs)
    fake, backend, jobs = submit_through_fake(sweep, specs, {resumed: "preempt-then-succeed", stopped: "preempt", plain: "succeed"})
    assert list(backend.status(jobs).values()) == ["completed", "preempted", "completed"]

    def results(job: BeakerJob) -> dict[str, bytes]:
        return {f.path: b"".join(fake.stream_result_file(job, f.path)) for f in fake.list_result_files(job)}

    def steps(log: bytes) -> list[int]:
        return [json.loads(line)["step"] for line in log.splitlines() if "loss" in json.loads(line)]

    preempted_job, resumed_job = fake.list_jobs(jobs[0].job_id)
    first, second = results(preempted_job), results(resumed_job)
    assert preempted_job.assignment_details.result_dataset_id != resumed_job.assignment_details.result_dataset_id
    # both jobs ran the same config, so the same checkpoint folder; each run has its own
    folder = f"tk-lab/bk-single/{resumed}/checkpoints"
    assert yaml.safe_load(first["config.yaml"]) == yaml.safe_load(second["config.yaml"])
    assert yaml.safe_load(second["config.yaml"])["checkpoint"]["dir"] == f"/weka/{WEKA}/{folder}"
    assert not [p for p in {**first, **second} if p.startswith("checkpoints/")]  # none in a result dataset
    bucket = fake.weka[WEKA]
    assert bucket[f"{folder}/config.sha256"].decode().strip() == specs[0].run.config.digest()
    assert sorted(p for p in bucket if p.endswith("/COMPLETE")) == sorted([
        f"{folder}/step-000000010/COMPLETE", f"{folder}/step-000000020/COMPLETE",
        f"tk-lab/bk-single/{stopped}/checkpoints/step-000000010/COMPLETE",
        f"tk-lab/bk-single/{plain}/checkpoints/step-000000020/COMPLETE"])
    # the preempted job got to step 10; the resumed one went on from there, not from 0
    assert steps(first["train_log.jsonl"]) == list(range(1, 11))
    backend.pull(jobs[0], specs[0].run_dir)
    log = (specs[0].run_dir / "train_log.jsonl").read_bytes()
    events = [json.loads(line) for line in log.splitlines() if "event" in json.loads(line)]
    assert events == [{"event": "resumed", "step": 10, "checkpoint": "step-000000010"}]
    assert steps(log) == list(range(1, 21))  # the whole history, each step once
    assert log.startswith(first["train_log.jsonl"])
    assert (specs[0].run_dir / "DONE").is_file() and not (specs[0].run_dir / "checkpoints").exists()
    assert b"resumed" not in results(fake.list_jobs(jobs[2].job_id)[0])["train_log.jsonl"]


def test_status_mapping_of_unfinished_and_cancelled(single: tuple[Sweep, list[RunSpec]]) -> None:
    sweep, specs = single
    a, b, c = (rs.run.run_id for rs in specs)
    fake, backend, jobs = submit_through_fake(sweep, specs, {a: "running", b: "queued", c: "preempt"})
    assert backend.status(jobs) == {jobs[0].job_id: "running", jobs[1].job_id: "pending",
                                    jobs[2].job_id: "preempted"}
    backend.pull(jobs[0], specs[0].run_dir)  # a running job's results so far
    assert json.loads((specs[0].run_dir / "status.json").read_text())["state"] == "running"
    assert not (specs[0].run_dir / "DONE").exists()
    fake.script(jobs[0].job_id, "succeed")
    assert backend.status(jobs[:1]) == {jobs[0].job_id: "completed"}
    backend.cancel(jobs[1:2])
    assert fake.cancelled == [jobs[1].job_id]
    assert backend.status(jobs[1:2]) == {jobs[1].job_id: "cancelled"}
    assert backend.status([Job("nope", "01NOSUCHWORKLOAD")]) == {"01NOSUCHWORKLOAD": "unknown"}


def test_multi_node_through_fake(multi: tuple[Sweep, list[RunSpec]]) -> None:
    sweep, specs = multi
    fake = FakeBeakerClient()
    backend = BeakerBackend(client=fake)
    (job,) = backend.submit(sweep, specs)
    replicas = fake.list_jobs(job.job_id)
    assert len(replicas) == 2
    assert [j.system_details.replica_group_details.rank for j in replicas] == [0, 1]
    assert backend.status([job]) == {job.job_id: "completed"}
    written = backend.pull(job, specs[0].run_dir)
    assert {p.name for p in written} >= {"DONE", "metrics.json", "predicted_examples.jsonl", "status.json"}


def test_job_state_mapping_on_real_protobufs() -> None:
    def job(**status: object) -> BeakerJob:
        return BeakerJob(id="j", status={"created": {"seconds": 1}, **status})

    fin = {"finalized": {"seconds": 9}}
    assert job_state(job(status=BeakerWorkloadStatus.queued.as_pb2())) == "pending"
    assert job_state(job(status=BeakerWorkloadStatus.initializing.as_pb2())) == "running"
    assert job_state(job(started={"seconds": 2})) == "running"
    assert job_state(job()) == "pending"
    assert job_state(job(**fin, exit_code=0, status=BeakerWorkloadStatus.succeeded.as_pb2())) == "completed"
    assert job_state(job(**fin, exit_code=2, failed={"seconds": 3})) == "failed"
    assert job_state(job(**fin, exit_code=75)) == "preempted"  # trainer checkpointed on SIGTERM
    for code, want in [(BeakerCancelationCode.system_preemption, "preempted"),
                       (BeakerCancelationCode.user_preemption, "preempted"),
                       (BeakerCancelationCode.manual, "cancelled"),
                       (BeakerCancelationCode.timeout, "failed"),
                       (BeakerCancelationCode.impossible_to_schedule, "failed")]:
        assert job_state(job(**fin, canceled={"seconds": 4}, canceled_code=code.as_pb2())) == want, code
    assert attempt_state([]) == "pending"
    done = job(**fin, exit_code=0)
    assert attempt_state([done, job(**fin, exit_code=1)]) == "failed"
    assert attempt_state([done, job(status=BeakerWorkloadStatus.running.as_pb2())]) == "running"
    assert attempt_state([done, done]) == "completed"


def test_pull_refuses_escaping_paths_and_skips_checkpoints(single: tuple[Sweep, list[RunSpec]]) -> None:
    sweep, specs = single
    rid = specs[0].run.run_id
    fake = FakeBeakerClient(results={rid: {"DONE": b"x\n", "checkpoints/step-000000010/COMPLETE": b"",
                                           "model/config.json": b"{}"}})
    backend = BeakerBackend(client=fake)
    job = backend.submit(sweep, specs[:1])[0]
    written = backend.pull(job, specs[0].run_dir)
    assert sorted(p.relative_to(specs[0].run_dir).as_posix() for p in written) == ["DONE", "model/config.json"]
    fake2 = FakeBeakerClient(results={rid: {"../evil": b"x"}})
    job2 = BeakerBackend(client=fake2).submit(sweep, specs[:1])[0]
    with pytest.raises(ValueError, match="refusing"):
        BeakerBackend(client=fake2).pull(job2, specs[0].run_dir)


def test_real_client_calls_match_beaker_py_signatures(single: tuple[Sweep, list[RunSpec]]) -> None:
    """RealBeakerClient against a stand-in `Beaker` whose methods bind their arguments to beaker-py's own
    signatures (ExperimentClient.create, WorkloadClient.get/cancel, JobClient.list/get/get_results,
    DatasetClient.list_files/stream_file, WorkspaceClient.get) and answer with the fake's protobufs."""
    import inspect

    from beaker import BeakerDataset, BeakerWorkspace
    from beaker._dataset import DatasetClient
    from beaker._experiment import ExperimentClient
    from beaker._job import JobClient
    from beaker._workload import WorkloadClient
    from beaker._workspace import WorkspaceClient

    from launcher.backends.beaker import RealBeakerClient

    sweep, specs = single
    fake = FakeBeakerClient({specs[0].run.run_id: "preempt-then-succeed"})
    calls: list[str] = []

    class Service:
        def __init__(self, cls: type, answers: dict[str, object]):
            self.cls, self.answers = cls, answers

        def __getattr__(self, name: str) -> object:
            def call(*args: object, **kwargs: object) -> object:
                inspect.signature(getattr(self.cls, name)).bind(None, *args, **kwargs)
                calls.append(f"{self.cls.__name__}.{name}")
                answer = self.answers[name]
                return answer(*args, **kwargs) if callable(answer) else answer
            return call

    state: dict[str, object] = {}

    def create(*, spec: BeakerExperimentSpec, name: str, workspace: object) -> object:
        assert isinstance(workspace, BeakerWorkspace)
        w = fake.create_experiment(spec, name, workspace.name)
        state["w"] = w
        return w

    class StandIn:
        workspace = Service(WorkspaceClient, {"get": lambda name: BeakerWorkspace(id="ws1", name=name)})
        experiment = Service(ExperimentClient, {"create": create})
        workload = Service(WorkloadClient, {"get": lambda wid: state["w"], "cancel": lambda *w: ["x"]})
        job = Service(JobClient, {
            "list": lambda **kw: reversed(fake.list_jobs(state["w"].experiment.id)),  # type: ignore[attr-defined]
            "get": fake.get_job,
            "get_results": lambda job: BeakerDataset(id=job.assignment_details.result_dataset_id),
        })
        dataset = Service(DatasetClient, {
            "list_files": lambda ds, **kw: fake.list_result_files(
                BeakerJob(assignment_details={"result_dataset_id": ds.id})),
            "stream_file": lambda ds, path, **kw: fake.stream_result_file(
                BeakerJob(assignment_details={"result_dataset_id": ds.id}), path),
        })

    backend = BeakerBackend(client=RealBeakerClient(beaker=StandIn()))
    (job,) = backend.submit(sweep, specs[:1])
    assert backend.status([job]) == {job.job_id: "completed"}
    assert (specs[0].run_dir / "DONE") in backend.pull(job, specs[0].run_dir)
    backend.cancel([job])
    assert {"ExperimentClient.create", "WorkspaceClient.get", "JobClient.list", "JobClient.get_results",
            "DatasetClient.list_files", "DatasetClient.stream_file", "WorkloadClient.cancel"} <= set(calls)


# --- a real Beaker ---------------------------------------------------------------------------------------


@pytest.mark.beaker
@pytest.mark.skipif(not os.environ.get("BEAKER_TOKEN"), reason="needs BEAKER_TOKEN (and a reachable Beaker)")
def test_real_submission(tmp_path: Path) -> None:
    """Submit one tiny run to a real Beaker, read its state back, then cancel it.

    Needs BEAKER_TOKEN, TK_BEAKER_WORKSPACE, TK_BEAKER_IMAGE and TK_BEAKER_CLUSTER.
    """
    need = ["TK_BEAKER_WORKSPACE", "TK_BEAKER_IMAGE", "TK_BEAKER_CLUSTER"]
    if missing := [k for k in need if not os.environ.get(k)]:
        pytest.skip(f"set {', '.join(missing)}")
    sweep = make_sweep(tmp_path, textwrap.dedent(f"""\
        name: tk-beaker-smoke
        base: {{model: {{name_or_path: tiny}}, optim: {{max_steps: 2}}}}
        resources: {{gpus: 0, cpus: 2, memory: 8G, time: "00:20:00"}}
        backend:
          beaker:
            workspace: {os.environ["TK_BEAKER_WORKSPACE"]}
            clusters: [{os.environ["TK_BEAKER_CLUSTER"]}]
            image: {os.environ["TK_BEAKER_IMAGE"]}
            priority: low
            retries: 0
        """))
    backend = BeakerBackend()
    specs = run_specs(sweep, tmp_path / "runs")
    jobs = backend.submit(sweep, specs)
    try:
        states = backend.status(jobs)
        assert states[jobs[0].job_id] in {"pending", "running", "completed"}
    finally:
        backend.cancel(jobs)
