"""The trainer for real: a tiny T5 on the embedded data, on CPU -- config, run directory, exact resume, learning."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from ni.data import require_split
from ni.errors import ConfigError
from tests.conftest import REPO, read_log, run_trainer, small_run, trainer_cmd, write_config
from trainer.accel import resolve_precision
from trainer.config import load_config, validate_config

# --- config -------------------------------------------------------------------------------------------


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "r.yaml", model={"name_or_path": "x"}, optim={"learning_rate": 1e-4})
    with pytest.raises(ConfigError, match=r"r.yaml: unknown key 'optim.learning_rate'.*Valid keys here: .*lr"):
        load_config(cfg)


def test_wrong_type_and_bad_encoding_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"x.yaml: optim.per_device_batch_size"):
        validate_config({"model": {"name_or_path": "m"}, "optim": {"per_device_batch_size": "big"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"data.train_encoding: unknown encoding 'def_pos'"):
        validate_config({"model": {"name_or_path": "m"}, "data": {"train_encoding": "def_pos"}}, "x.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name_or_path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(bad)


def test_overrides_are_typed_and_dry_run_prints_resolved_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "r.yaml", model={"name_or_path": "m"})
    loaded = load_config(cfg, ["optim.lr=1e-4", "data.task_limit=8", "do_train=false"])
    assert loaded.optim.lr == 1e-4 and loaded.data.task_limit == 8 and not loaded.do_train
    r = run_trainer("run", "--config", str(cfg), "--set", "optim.epochs=3", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["optim"]["epochs"] == 3
    r = run_trainer("run", "--config", str(cfg), "--set", "optim.epoch=3", "--dry-run")
    assert r.returncode == 2 and "unknown key 'optim.epoch'" in r.stderr


def test_fp16_is_refused_for_t5() -> None:
    cfg = validate_config({"model": {"name_or_path": "m"}, "precision": "fp16"}, "x")
    with pytest.raises(ConfigError, match="T5 activations overflow in fp16"):
        resolve_precision(cfg, "t5")
    assert resolve_precision(validate_config({"model": {"name_or_path": "m"}}, "x"), "t5") == "no"  # CPU: fp32


@pytest.mark.slow
def test_not_a_seq2seq_model_and_missing_data_root(tmp_path: Path, tiny_model: Path, embedded: Path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "gpt2")
    cfg = write_config(tmp_path / "r.yaml", **small_run(tmp_path, tmp_path / "gpt2", embedded))
    r = run_trainer("run", "--config", str(cfg))
    assert r.returncode == 2 and "is not a seq2seq (encoder-decoder) model (model_type=gpt2)" in r.stderr
    cfg = write_config(tmp_path / "r2.yaml", **small_run(tmp_path / "2", tiny_model, tmp_path / "nowhere"))
    r = run_trainer("run", "--config", str(cfg))
    assert r.returncode == 2 and "data root not found" in r.stderr
    status = orjson.loads((tmp_path / "2" / "run" / "status.json").read_bytes())
    assert status["state"] == "failed" and "data root not found" in status["error"]


# --- runs ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_writes_the_run_directory_and_skips_when_done(tmp_path: Path, tiny_model: Path, embedded: Path) -> None:
    cfg = write_config(tmp_path / "r.yaml", **small_run(tmp_path, tiny_model, embedded))
    r = run_trainer("run", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    for name in ("config.yaml", "predicted_examples.jsonl", "metrics.json", "train_log.jsonl", "status.json", "DONE"):
        assert (run / name).is_file(), name
    status = orjson.loads((run / "status.json").read_bytes())
    assert status["state"] == "completed" and status["finished_at"]
    log = [x for x in read_log(run) if "loss" in x]
    assert [x["step"] for x in log] == [1, 2, 3, 4, 5, 6]
    assert all(x["nonpad_tokens_per_s"] > 0 and x["peak_memory_mb"] > 0 for x in log)
    preds = [orjson.loads(line) for line in (run / "predicted_examples.jsonl").read_bytes().splitlines()]
    assert len(preds) == 4 * 4 and {"id", "Task", "Instance", "prediction", "Definition", "Categories"} <= set(preds[0])
    metrics = orjson.loads((run / "metrics.json").read_bytes())
    assert metrics["num_examples"] == 16 and set(metrics["overall"]) == {"exact_match", "rouge1", "rougeL"}
    # the kept model is a publishable folder: its card carries the run's metrics (Beaker keeps it as the result)
    from trainer.export import card_metrics

    card = (run / "model" / "README.md").read_text()
    assert card_metrics(card)["rougeL"] == metrics["overall"]["rougeL"]
    # again: completed, so skipped
    r = run_trainer("run", "--config", str(cfg))
    assert r.returncode == 0 and "already completed" in r.stdout
    # a different config must never reuse this directory
    r = run_trainer("run", "--config", str(cfg), "--set", "optim.lr=0.5")
    assert r.returncode == 2 and "holds a run of a different config" in r.stderr
    # a predict-only run of the trained model reproduces the predictions
    cfg2 = write_config(tmp_path / "p.yaml", **small_run(tmp_path / "p", run / "model", embedded, do_train="false"))
    r = run_trainer("run", "--config", str(cfg2))
    assert r.returncode == 0, r.stderr
    again = [orjson.loads(line) for line in (tmp_path / "p" / "run" / "predicted_examples.jsonl").read_bytes().splitlines()]
    assert [p["prediction"] for p in again] == [p["prediction"] for p in preds]


def final_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


RESUME = {"optim.max_steps": 12, "optim.grad_accum": 1, "checkpoint.every_steps": 5}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, embedded: Path) -> Path:
    """An uninterrupted run: what every interrupted and resumed run must reproduce exactly."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = write_config(tmp / "a.yaml", **small_run(tmp, tiny_model, embedded, **RESUME))
    cache = tmp_path_factory.getbasetemp() / "encoded-cache"  # set before the autouse fixture runs
    r = run_trainer("run", "--config", str(cfg), env={"TK_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    return tmp / "run"


def interrupt(cfg: Path, run: Path, stop_at: int) -> None:
    """Start the trainer and SIGTERM it once its log reaches `stop_at`: it saves a checkpoint and exits 75."""
    proc = subprocess.Popen(trainer_cmd("run", "--config", str(cfg)), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "TK_DEBUG_STEP_DELAY": "0.3"})
    deadline = time.time() + 300
    while time.time() < deadline:
        log = read_log(run) if (run / "train_log.jsonl").is_file() else []
        if any(x.get("step", 0) >= stop_at for x in log):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out
    assert orjson.loads((run / "status.json").read_bytes())["state"] == "preempted"
    assert not (run / "DONE").exists()


def assert_same_run(run: Path, straight: Path) -> None:
    """The same losses at every step and bit-identical final weights."""
    import torch

    losses = {x["step"]: x["loss"] for x in read_log(run) if "loss" in x}
    assert losses == {x["step"]: x["loss"] for x in read_log(straight) if "loss" in x}
    wa, wb = final_weights(straight), final_weights(run)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_resume_after_sigterm_is_exact(tmp_path: Path, tiny_model: Path, embedded: Path, straight: Path) -> None:
    """Interrupted at a random step and resumed, a run ends with the same weights and losses as one that was not."""
    import random

    steps = RESUME["optim.max_steps"]
    cfg = write_config(tmp_path / "b.yaml", **small_run(tmp_path / "b", tiny_model, embedded, **RESUME))
    run = tmp_path / "b" / "run"
    stop_at = random.Random().randint(2, steps - 3)
    interrupt(cfg, run, stop_at)

    r = run_trainer("run", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = [x for x in read_log(run) if x.get("event") == "resumed"]
    assert len(resumed) == 1 and stop_at <= resumed[0]["step"] < steps
    assert_same_run(run, straight)
    assert len(list((run / "checkpoints").iterdir())) <= 2  # keep_last


@pytest.mark.slow
def test_resume_into_a_fresh_run_dir_from_checkpoint_dir(tmp_path: Path, tiny_model: Path, embedded: Path,
                                                         straight: Path) -> None:
    """What a Beaker job resumed after a preemption sees: an EMPTY output_dir (a fresh result dataset) and the same
    checkpoint.dir (a Weka path). It resumes exactly, and its train_log.jsonl holds the whole history."""
    ckpt = tmp_path / "weka" / "sweep" / "run-id" / "checkpoints"
    extra = {**RESUME, "checkpoint.dir": str(ckpt)}
    first = write_config(tmp_path / "job1.yaml", **small_run(tmp_path / "job1", tiny_model, embedded, **extra))
    interrupt(first, tmp_path / "job1" / "run", stop_at=6)
    assert not (tmp_path / "job1" / "run" / "checkpoints").exists()
    saved = [p for p in ckpt.iterdir() if (p / "COMPLETE").is_file()]
    assert saved and all((p / "train_log.jsonl").is_file() for p in saved)

    second = write_config(tmp_path / "job2.yaml", **small_run(tmp_path / "job2", tiny_model, embedded, **extra))
    run = tmp_path / "job2" / "run"
    assert not run.exists()
    r = run_trainer("run", "--config", str(second))
    assert r.returncode == 0, r.stdout + r.stderr
    log = read_log(run)
    resumed = [x for x in log if x.get("event") == "resumed"]
    assert len(resumed) == 1 and 6 <= resumed[0]["step"] < RESUME["optim.max_steps"]
    assert [x["step"] for x in log if "loss" in x] == list(range(1, RESUME["optim.max_steps"] + 1))  # each once
    assert_same_run(run, straight)
    assert len([p for p in ckpt.iterdir() if p.is_dir()]) <= 2  # keep_last, in the checkpoint dir
    assert yaml.safe_load((run / "config.yaml").read_text())["checkpoint"]["dir"] == str(ckpt)


@pytest.mark.slow
def test_two_processes_with_gloo(tmp_path: Path, tiny_model: Path, embedded: Path) -> None:
    """torchrun starts two CPU ranks (asserted), which train, predict shards and write one predictions file. The
    length comes from epochs: status.json carries the total the trainer planned (what the launcher's ETA counts to)."""
    run_cfg = small_run(tmp_path, tiny_model, embedded)
    run_cfg["optim"] = {**run_cfg["optim"], "max_steps": None, "epochs": 0.375}
    examples = len(require_split(embedded, "default", "train", max_instances_per_task=16, seed=42))

    def planned(world: int) -> int:  # optimizer steps: micro-batches of 4 per rank, 2 accumulated, 0.375 epochs
        return math.ceil(0.375 * math.ceil(math.ceil(examples / 4) / (world * 2)))

    assert planned(2) == 6 and planned(1) == 12  # the embedded data's 256 examples: the rank count shows
    cfg = write_config(tmp_path / "r.yaml", **run_cfg)
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "trainer", "run", "--config", str(cfg)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "TK_CACHE_DIR": str(tmp_path / "c")},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # one train and one test entry, shared by both ranks (the main process built them; the other mapped them)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "c").iterdir() if p.is_dir()) == ["test", "train"]
    run = tmp_path / "run"
    status = orjson.loads((run / "status.json").read_bytes())
    assert status["state"] == "completed" and status["world_size"] == 2
    batch = {"world_size": 2, "effective_batch_size": 4 * 2 * 2, "grad_accum": 2, "per_device_batch_size": 4}
    assert {k: status[k] for k in batch} == batch
    rows = [x for x in read_log(run) if "loss" in x]
    assert len(rows) == planned(2) and all({k: x[k] for k in batch} == batch for x in rows)
    assert status["total_steps"] == rows[-1]["step"] == planned(2)
    preds = [orjson.loads(line) for line in (run / "predicted_examples.jsonl").read_bytes().splitlines()]
    assert len(preds) == 16 and len({p["id"] for p in preds}) == 16
    assert [p for p in run.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


@pytest.mark.slow
def test_tiny_model_learns_the_training_tasks(tmp_path: Path, embedded: Path) -> None:
    """A learning test, not a smoke test: after a minute of CPU training the tiny T5 must clearly beat the
    copy-demo baseline on the same instances of its training tasks."""
    import shutil

    from evaluation.scoring import evaluate
    from trainer.tiny import build_tiny_model

    data = tmp_path / "data"
    shutil.copytree(embedded, data)
    split = data / "splits" / "default"
    (split / "test_tasks.txt").write_text((split / "train_tasks.txt").read_text())
    model = build_tiny_model(tmp_path / "tiny", data)
    cfg = small_run(tmp_path, model, data)
    cfg["data"].update(train_encoding="instruct_input", max_instances_per_task=200, max_instances_per_eval_task=20,
                       max_source_length=160)
    cfg["optim"] = {"lr": 1e-3, "epochs": 8, "per_device_batch_size": 32, "schedule": "linear", "warmup_steps": 20}
    cfg["logging"]["every_steps"] = 50
    cfg["checkpoint"] = {"every_steps": 10_000, "save_final_model": False}
    r = run_trainer("run", "--config", str(write_config(tmp_path / "r.yaml", **cfg)))
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    rows = [orjson.loads(line) for line in (run / "predicted_examples.jsonl").read_bytes().splitlines()]
    refs = [r["Instance"]["output"] for r in rows]
    args = ([r["Task"] for r in rows], [r["Categories"][0] for r in rows])
    copy_demo = evaluate([r["Positive Examples"][0]["output"] for r in rows], refs, *args)["overall"]["rougeL"]
    trained = orjson.loads((run / "metrics.json").read_bytes())["overall"]["rougeL"]
    assert trained == evaluate([r["prediction"] for r in rows], refs, *args)["overall"]["rougeL"]
    assert trained > copy_demo + 25, (trained, copy_demo)
    losses = [x["loss"] for x in read_log(run) if "loss" in x]
    assert losses[-1] < losses[0] / 3


@pytest.mark.slow
def test_stopped_while_predicting_resumes_the_prediction(tmp_path: Path, tiny_model: Path, embedded: Path) -> None:
    """SIGTERM while predicting: exit 75 with the finished batches kept; the next attempt predicts only the rest
    and writes the same predictions as an attempt that was never stopped."""
    run_cfg = {"do_train": False, "eval.batch_size": 2, "eval.max_new_tokens": 4}
    straight_cfg = write_config(tmp_path / "a.yaml", **small_run(tmp_path / "a", tiny_model, embedded, **run_cfg))
    r = run_trainer("run", "--config", str(straight_cfg))
    assert r.returncode == 0, r.stderr
    cfg = write_config(tmp_path / "b.yaml", **small_run(tmp_path / "b", tiny_model, embedded, **run_cfg))
    run, partial = tmp_path / "b" / "run", tmp_path / "b" / "run" / "predictions.partial"
    proc = subprocess.Popen(trainer_cmd("run", "--config", str(cfg)), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "TK_DEBUG_PREDICT_DELAY": "0.3"})
    deadline = time.time() + 300
    while time.time() < deadline and sum(len(p.read_bytes().splitlines()) for p in partial.glob("*.jsonl")) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out
    status = orjson.loads((run / "status.json").read_bytes())
    assert status["state"] == "preempted" and status["phase"] == "predict" and status["predicted"] >= 4
    assert not (run / "predicted_examples.jsonl").exists() and not (run / "DONE").exists()

    r = run_trainer("run", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    (event,) = [x for x in read_log(run) if x.get("event") == "prediction_resumed"]
    total = len((tmp_path / "a" / "run" / "predicted_examples.jsonl").read_bytes().splitlines())
    assert 4 <= event["kept"] < event["total"] == total
    assert (run / "predicted_examples.jsonl").read_bytes() == (tmp_path / "a" / "run" / "predicted_examples.jsonl").read_bytes()
    assert (run / "DONE").is_file() and not partial.exists()
