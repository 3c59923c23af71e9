"""DeepSpeed ZeRO-2 / ZeRO-3 through accelerate, for real on DeepSpeed's CPU accelerator (one torchrun rank)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from trainer.config import validate_config
from trainer.run import deepspeed_plugin

pytest.importorskip("deepspeed", reason="deepspeed is not installed (scripts/install.sh --deepspeed)")
REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
def test_zero2_and_zero3_train_the_same_model(tmp_path: Path, tiny_model: Path, embedded: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    from tests.test_trainer import small_run, write_config

    runs = {}
    for stage in (2, 3):
        cfg = small_run(tmp_path / f"z{stage}", tiny_model, embedded, **{"deepspeed.stage": stage, "optim.max_steps": 4})
        r = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", f"2953{stage}",
             "-m", "trainer", "run", "--config", str(write_config(tmp_path / f"z{stage}.yaml", **cfg))],
            cwd=REPO, capture_output=True, text=True, timeout=900,
        )
        run = tmp_path / f"z{stage}" / "run"
        assert r.returncode == 0, r.stderr[-3000:]
        status = orjson.loads((run / "status.json").read_bytes())
        assert status["state"] == "completed" and status["distributed_type"] == "DEEPSPEED"
        assert (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
        runs[stage] = run
    # ZeRO-3 partitions parameters: the saved model must hold the gathered, full-size weights
    w2, w3 = (AutoModelForSeq2SeqLM.from_pretrained(runs[s] / "model").state_dict() for s in (2, 3))
    assert w2.keys() == w3.keys()
    assert all(w2[k].shape == w3[k].shape and (w2[k] - w3[k]).abs().max() < 1e-3 for k in w2)
    preds = [[orjson.loads(x)["prediction"] for x in (runs[s] / "predicted_examples.jsonl").read_bytes().splitlines()]
             for s in (2, 3)]
    assert preds[0] == preds[1]


def odd_test_set(tmp: Path, embedded: Path) -> Path:
    """The embedded data with three test tasks: 3 x 3 = 9 test examples, so 2 ranks get different batch counts."""
    import shutil

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
    from tests.test_trainer import run_trainer, small_run, write_config

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
