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
