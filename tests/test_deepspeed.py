"""DeepSpeed ZeRO-2 / ZeRO-3 through accelerate, for real: two gloo ranks on DeepSpeed's CPU accelerator."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO
from trainer.accel import deepspeed_plugin
from trainer.config import validate_config

pytest.importorskip("deepspeed", reason="deepspeed is not installed (scripts/install.sh --deepspeed)")


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("offload", [False, True])
def test_zero_configs_validate_through_accelerate(stage: int, offload: bool) -> None:
    cfg = validate_config({"model": {"name_or_path": "m"}, "deepspeed": {"stage": stage, "offload": offload},
                           "optim": {"per_device_batch_size": 4, "grad_accum": 8, "max_grad_norm": 1.0}}, "x")
    plugin = deepspeed_plugin(cfg, "bf16")
    ds = plugin.deepspeed_config
    assert plugin.zero_stage == stage
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 8
    assert ds["bf16"] == {"enabled": True} and ds["gradient_clipping"] == 1.0
    assert ("offload_optimizer" in ds["zero_optimization"]) == offload
    assert not any(v == "auto" for v in ds.values())


def losses(run: Path) -> dict[int, float]:
    return {x["step"]: x["loss"] for x in map(orjson.loads, (run / "train_log.jsonl").read_bytes().splitlines())
            if "loss" in x}


@pytest.mark.slow
def test_zero2_and_zero3_with_two_ranks_train_checkpoint_resume_and_predict(tmp_path: Path, tiny_model: Path,
                                                                            embedded: Path) -> None:
    """Two gloo ranks on DeepSpeed's CPU accelerator, as a `gpus: 2` run would start them: each stage trains, saves
    checkpoints, resumes from one (the same losses as without the interruption) and predicts 9 examples (the ranks
    get different batch counts). ZeRO-2 and ZeRO-3 end with the same model and predictions."""
    from transformers import AutoModelForSeq2SeqLM

    from tests.conftest import small_run, write_config

    data = odd_test_set(tmp_path, embedded)
    runs = {}
    for stage in (2, 3):
        cfg = small_run(tmp_path / f"z{stage}", tiny_model, data, **{
            "deepspeed.stage": stage, "world_size": 2, "optim.max_steps": 4, "checkpoint.every_steps": 2,
            "data.max_instances_per_eval_task": 3, "eval.batch_size": 2, "eval.max_new_tokens": 6})
        config = write_config(tmp_path / f"z{stage}.yaml", **cfg)
        r = torchrun(2, 29530 + stage, config)
        run = tmp_path / f"z{stage}" / "run"
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        status = orjson.loads((run / "status.json").read_bytes())
        assert status["state"] == "completed" and status["distributed_type"] == "DEEPSPEED"
        assert status["world_size"] == 2 and status["effective_batch_size"] == 4 * 2 * 2
        assert status["loaded_partitioned"] == (stage == 3)  # ZeRO-3 never holds the full model on a rank
        steps = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert steps == ["step-000000002", "step-000000004"]
        assert len(predictions(run)) == 9
        straight = losses(run)
        assert sorted(straight) == [1, 2, 3, 4]
        # resume: as if stopped after the checkpoint at step 2
        first = predictions(run)
        shutil.rmtree(run / "checkpoints" / "step-000000004")
        shutil.rmtree(run / "model")
        for name in ("DONE", "predicted_examples.jsonl", "metrics.json"):
            (run / name).unlink()
        r = torchrun(2, 29535 + stage, config)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        resumed = [x for x in map(orjson.loads, (run / "train_log.jsonl").read_bytes().splitlines())
                   if x.get("event") == "resumed"]
        assert [x["step"] for x in resumed] == [2]
        again = losses(run)
        assert sorted(again) == [1, 2, 3, 4] and all(abs(again[s] - straight[s]) < 1e-5 for s in again)
        assert predictions(run) == first
        runs[stage] = run
    # ZeRO-3 partitions parameters: the saved model must hold the gathered, full-size weights
    w2, w3 = (AutoModelForSeq2SeqLM.from_pretrained(runs[s] / "model").state_dict() for s in (2, 3))
    assert w2.keys() == w3.keys()
    assert all(w2[k].shape == w3[k].shape and (w2[k] - w3[k]).abs().max() < 1e-3 for k in w2)
    assert predictions(runs[2]) == predictions(runs[3])


def odd_test_set(tmp: Path, embedded: Path) -> Path:
    """The embedded data with three test tasks: 3 x 3 = 9 test examples, so 2 ranks get different batch counts."""
    data = tmp / "data"
    shutil.copytree(embedded, data)
    tasks = data / "splits" / "default" / "test_tasks.txt"
    tasks.write_text("\n".join(tasks.read_text().split()[:3]) + "\n")
    return data


def torchrun(nproc: int, port: int, config: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
         "-m", "trainer", "run", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )


def predictions(run: Path) -> list[str]:
    return [orjson.loads(x)["prediction"] for x in (run / "predicted_examples.jsonl").read_bytes().splitlines()]


@pytest.mark.slow
def test_zero3_prediction_with_uneven_shards_finishes_like_one_rank(tmp_path: Path, tiny_model: Path,
                                                                     embedded: Path) -> None:
    """9 examples, 2 ZeRO-3 ranks, batch 2: rank 0 has 3 batches, rank 1 only 2. Rank 1 must still run the third
    forward pass (a dummy row), or rank 0 waits forever for its parameter all-gather."""
    from tests.conftest import run_trainer, small_run, write_config

    data = odd_test_set(tmp_path, embedded)
    common = {"do_train": "false", "data.max_instances_per_eval_task": 3, "eval.batch_size": 2,
              "eval.max_new_tokens": 6}
    one = write_config(tmp_path / "one.yaml", **small_run(tmp_path / "one", tiny_model, data, **common))
    r = run_trainer("run", "--config", str(one))
    assert r.returncode == 0, r.stderr[-3000:]
    two = write_config(tmp_path / "two.yaml", **small_run(tmp_path / "two", tiny_model, data, **common,
                                                         **{"deepspeed.stage": 3, "world_size": 2}))
    r = torchrun(2, 29541, two, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    status = orjson.loads((tmp_path / "two" / "run" / "status.json").read_bytes())
    assert status["world_size"] == 2 and status["distributed_type"] == "DEEPSPEED"
    expected = predictions(tmp_path / "one" / "run")
    assert len(expected) == 9
    assert predictions(tmp_path / "two" / "run") == expected


@pytest.mark.slow
def test_gradient_checkpointing_under_zero3_with_two_ranks_gives_the_same_losses(tmp_path: Path, tiny_model: Path,
                                                                                  embedded: Path) -> None:
    """`optim.gradient_checkpointing` as a large model uses it: ZeRO-3 on two ranks, each layer's partitioned
    parameters gathered again for the recomputed forward. Recomputing trades time for memory and nothing else: the
    losses are those of the same run without it."""
    from tests.conftest import small_run, write_config

    got = {}
    for on, port in ((False, 29543), (True, 29544)):
        name = "ckpt" if on else "plain"
        cfg = small_run(tmp_path / name, tiny_model, embedded, **{
            "deepspeed.stage": 3, "world_size": 2, "optim.max_steps": 3, "optim.gradient_checkpointing": on,
            "do_predict": False})
        r = torchrun(2, port, write_config(tmp_path / f"{name}.yaml", **cfg))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        status = orjson.loads((tmp_path / name / "run" / "status.json").read_bytes())
        assert status["state"] == "completed" and status["loaded_partitioned"]
        assert status["activation_checkpointing"] == on
        got[on] = losses(tmp_path / name / "run")
    assert sorted(got[True]) == [1, 2, 3]
    assert got[True].keys() == got[False].keys()
    assert all(abs(got[True][s] - got[False][s]) < 1e-5 for s in got[True]), got
