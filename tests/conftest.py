"""Shared fixtures and helpers: the real NI sample and golden files in ../shared, tokenizers and the tiny model built
here, trainer configs and subprocesses, launch configs through the real manifest, and the SLURM test cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from launcher.backends.base import RunSpec
    from launcher.sweep import Sweep

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers already keep the cores busy: a run (or a torch call here) with an OpenMP thread per core would
    # fight the other worker's for them, several times slower (set here, before anything imports torch; a value
    # given from outside wins). Every rank that torchrun starts gets 1 anyway.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
SHARED = Path(os.environ.get("TK_SHARED", REPO.parent / "shared"))
NI_SAMPLE = SHARED / "ni-sample"
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def ni_sample() -> Path:
    if not (NI_SAMPLE / "tasks").is_dir():
        pytest.skip(f"real NI sample not found at {NI_SAMPLE} (set TK_SHARED to the shared/ directory)")
    return NI_SAMPLE


@pytest.fixture(scope="session")
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden files not found at {GOLDEN} (set TK_SHARED to the shared/ directory)")
    return GOLDEN


@pytest.fixture(scope="session")
def t5_like_tokenizer(ni_sample: Path):
    """A T5-shaped Unigram tokenizer trained on the NI sample's text (no hub here)."""
    from trainer.tiny import load_all_tasks, task_texts, train_tokenizer

    return train_tokenizer(task_texts(load_all_tasks(ni_sample)), vocab_size=2000)


@pytest.fixture(scope="session")
def byte_bpe_tokenizer(ni_sample: Path):
    """A GPT-2-shaped byte-level BPE tokenizer trained on the NI sample's text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from trainer.tiny import load_all_tasks, task_texts

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(task_texts(load_all_tasks(ni_sample)), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", model_max_length=1 << 20)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default dataset, generated afresh."""
    from ni.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic", seed=0)


@pytest.fixture(scope="session")
def tiny_model(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", embedded, d_model=64, num_layers=2)


@pytest.fixture(autouse=True)
def _encoded_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's encoding cache."""
    monkeypatch.setenv("TK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "encoded-cache"))


# --- trainer configs and subprocesses -------------------------------------------------------------------------


def write_config(path: Path, **sections: object) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


def small_run(tmp: Path, model: Path, data: Path, **extra: object) -> dict:
    """A run config small enough for CPU: 6 steps, 4 eval examples per task; `extra` are `key=value` overrides."""
    from trainer.config import apply_overrides

    cfg: dict = {
        "name": "t",
        "model": {"name_or_path": str(model)},
        "data": {"root": str(data), "max_instances_per_task": 16, "max_instances_per_eval_task": 4,
                 "max_source_length": 128},
        "optim": {"lr": 1e-3, "max_steps": 6, "per_device_batch_size": 4, "grad_accum": 2},
        "eval": {"batch_size": 16, "max_new_tokens": 8},
        "checkpoint": {"every_steps": 1000, "save_final_model": True},
        "logging": {"every_steps": 1, "progress": False},
        "output_dir": str(tmp / "run"),
    }
    for key, value in extra.items():
        cfg = apply_overrides(cfg, [f"{key}={value}"])
    return cfg


def trainer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]


def run_trainer(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(trainer_cmd(*args), cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1800)


def read_log(run: Path) -> list[dict]:
    import orjson

    return [orjson.loads(line) for line in (run / "train_log.jsonl").read_bytes().splitlines()]


# --- the launcher's side -------------------------------------------------------------------------------------


def launch_specs(sweep: Sweep, root: Path) -> list[RunSpec]:
    """Each run's launch config written the way `submit` writes it (the real manifest), and its RunSpec."""
    from launcher.manifest import Manifest

    manifest = Manifest(root, sweep)
    return [manifest.write_launch_config(r) for r in sweep.runs]


def tiny_sweep(path: Path, data: Path, name: str, steps: int = 2, instances: int = 4, more: str = "") -> Path:
    """A sweep of tiny-model runs on `data` (the embedded dataset) that a CPU trains in seconds; `more`: YAML
    appended (grid, backend, ...)."""
    path.write_text(
        f"name: {name}\nbase:\n  model: {{name_or_path: tiny}}\n  data: {{root: {data}, "
        f"max_instances_per_task: {instances}, max_instances_per_eval_task: 2, max_source_length: 96}}\n"
        f"  optim: {{max_steps: {steps}, per_device_batch_size: 4}}\n  eval: {{max_new_tokens: 4}}\n"
        "  checkpoint: {every_steps: 1000}\n  logging: {progress: false, every_steps: 1}\n" + more)
    return path


# --- the SLURM test cluster (scripts/slurm_cluster.sh start; SLURM_CONF set) ----------------------------------

CLUSTER_FIXTURES = {"cluster", "two_node_cluster"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers (`--dist loadgroup`); every test of the SLURM cluster goes to one of
    them, in turn: some stop and restart its slurmctld, and its node has the CPUs of one job at a time. That group
    (about half of the suite's time, mostly waiting on the cluster) is handed out first, so the other worker's tests
    run beside it rather than after it."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and config.getvalue("loadgroup")):
        return
    on_cluster = [item.get_closest_marker("slurm") is not None or bool(CLUSTER_FIXTURES & set(item.fixturenames))
                  for item in items if isinstance(item, pytest.Function)]
    if len(on_cluster) != len(items):
        raise pytest.UsageError("tests/conftest.py: an item that is not a test function; cannot group the cluster's")
    for item, grouped in zip(items, on_cluster, strict=True):
        if grouped:
            _join_group(item, "slurm")
    order = {id(item): not grouped for item, grouped in zip(items, on_cluster, strict=True)}
    items.sort(key=lambda item: order[id(item)])  # stable: the order within each part stays


def _join_group(item: pytest.Item, group: str) -> None:
    """What `--dist loadgroup` does for an `xdist_group` mark: the item's id gets the suffix `@group`, and the
    scheduler sends all ids of a suffix to one worker. pytest-xdist 3.8 writes `item._nodeid`, which pytest 9.2 no
    longer reads (a node's id is `item._id`, a `NodeId`), so the mark alone would group nothing: set it here, and
    stop if it did not take rather than let two workers share the cluster."""
    nodeid = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(nodeid)
    else:
        item._nodeid = nodeid
    if item.nodeid != nodeid:
        raise pytest.UsageError(f"tests/conftest.py: could not put {item.nodeid} in the xdist group '{group}' "
                                "(pytest or pytest-xdist changed how a test's id is set); run with TEST_WORKERS=1")


def cluster_reason() -> str | None:
    """Why no SLURM cluster answers here, or None when one does."""
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set (start one with scripts/slurm_cluster.sh start)"
    if shutil.which("sinfo") is None:
        return "sinfo not found"
    try:
        ok = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return None if ok else "sinfo does not answer (is the cluster up? scripts/slurm_cluster.sh status)"


@pytest.fixture
def cluster() -> None:
    reason = cluster_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second, real cluster of two virtual nodes on this machine (scripts/slurm_cluster.sh, TK_SLURM_NODES=2)."""
    reason = cluster_reason()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm2")
    env = {**os.environ, "TK_SLURM_DIR": str(state), "TK_SLURM_NODES": "2"}
    script = str(REPO / "scripts" / "slurm_cluster.sh")
    up = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield str(state / "slurm.conf")
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)


def prebuild_tiny_model() -> None:
    """The default data's tiny model, built once here rather than by several jobs at once."""
    from ni.synthetic import ensure_default_data
    from trainer.hf import resolve_model_path

    resolve_model_path("tiny", str(ensure_default_data()))


def start_requeued_soon(job_id: str, timeout: float = 120) -> None:
    """SLURM holds a requeued job back (BeginTime ~2 minutes on); once it is PENDING again, start it in a few
    seconds instead. Not at once: slurmd revokes the old attempt's credential, and a relaunch of the same job id
    within that second fails ("Killing non-startable batch JobId=N: Job credential revoked") and ends the job
    FAILED -- the flake seen before, a race in how the tests hurried SLURM, not in the launcher."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        raw = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        if raw.strip() == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+5"], capture_output=True,
                           check=True)
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not become PENDING again within {timeout:.0f}s")
