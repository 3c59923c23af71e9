"""The effective batch (per-device batch x ranks x accumulation) as part of a run, and the precision decision."""

from __future__ import annotations

import pytest

from ni.errors import ConfigError
from trainer.accel import Gpu, resolve_precision
from trainer.config import validate_config
from trainer.train import batch_fields, check_resumable


def cfg(**optim: object) -> dict:
    world = optim.pop("world_size", None)
    raw: dict = {"model": {"name_or_path": "m"}, "optim": optim}
    if world is not None:
        raw["world_size"] = world
    return raw


def test_effective_batch_size_derives_the_accumulation_from_the_planned_world_size() -> None:
    c = validate_config(cfg(per_device_batch_size=1, effective_batch_size=16, world_size=8), "x")
    assert c.optim.grad_accum == 2 and c.effective_batch_size() == 16
    c = validate_config(cfg(per_device_batch_size=1, effective_batch_size=16, world_size=16), "x")
    assert c.optim.grad_accum == 1 and batch_fields(c, 16) == {
        "world_size": 16, "effective_batch_size": 16, "grad_accum": 1, "per_device_batch_size": 1}
    # the resolved config (what RUN/config.yaml holds) validates again to the same run
    again = validate_config(c.model_dump(mode="json"), "config.yaml")
    assert again.digest() == c.digest() and again.optim.grad_accum == 1


def test_an_effective_batch_that_does_not_divide_or_disagrees_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"x: config: optim.effective_batch_size 16 is not a multiple of "
                                          r"per_device_batch_size 3 x world size 2 = 6$"):
        validate_config(cfg(per_device_batch_size=3, effective_batch_size=16, world_size=2), "x")
    with pytest.raises(ConfigError, match=r"optim.grad_accum 2 disagrees with optim.effective_batch_size 16: "
                                          r"1 per device x 16 ranks x 2 = 32; give only one of them"):
        validate_config(cfg(effective_batch_size=16, grad_accum=2, world_size=16), "x")
    # consistent: fine
    assert validate_config(cfg(effective_batch_size=16, grad_accum=2, world_size=8), "x").optim.grad_accum == 2


def test_without_a_planned_world_size_the_accumulation_follows_the_ranks_started() -> None:
    c = validate_config(cfg(per_device_batch_size=2, effective_batch_size=16), "x")
    assert c.effective_batch_size() is None
    assert c.for_world_size(2).optim.grad_accum == 4 and c.for_world_size(8).optim.grad_accum == 1
    # the identity holds the effective batch, not an accumulation derived at start
    assert c.for_world_size(2).digest() == c.for_world_size(4).digest() == c.digest()
    assert validate_config(cfg(per_device_batch_size=2, effective_batch_size=32), "x").digest() != c.digest()
    with pytest.raises(ValueError, match="not a multiple of per_device_batch_size 2 x world size 3"):
        c.for_world_size(3)


def test_the_identity_holds_the_effective_batch_once() -> None:
    planned = validate_config(cfg(effective_batch_size=16, world_size=8), "x")
    explicit = validate_config(cfg(grad_accum=2, world_size=8), "x")
    assert planned.digest() == explicit.digest()  # the same 1 x 8 x 2: the same run
    four = validate_config(cfg(effective_batch_size=16, world_size=4), "x")
    assert four.digest() != planned.digest()  # another world size is another run (issue 11: 8 -> 4 GPUs)
    # memory against compute, the same gradients: not part of the run
    ckpt = validate_config({**cfg(grad_accum=2, world_size=8), "optim": {"grad_accum": 2, "gradient_checkpointing": True}}, "x")
    assert ckpt.digest() == explicit.digest()


def test_resuming_with_another_world_size_only_when_the_data_position_maps() -> None:
    saved = {"step": 5, **batch_fields(validate_config(cfg(per_device_batch_size=2, grad_accum=4), "x"), 2)}
    same_batch = validate_config(cfg(per_device_batch_size=2, grad_accum=2), "x")
    check_resumable(saved, same_batch, 4, "ckpt")  # 2 ranks x 4 = 4 ranks x 2: each step takes the same micro-batches
    check_resumable(saved, validate_config(cfg(per_device_batch_size=2, grad_accum=4), "x"), 2, "ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt: written by 2 ranks \(effective batch 16\), now 4 ranks \(effective "
                                          r"batch 32\): its data position does not map"):
        check_resumable(saved, validate_config(cfg(per_device_batch_size=2, grad_accum=4), "x"), 4, "ckpt")
    zero = validate_config({**cfg(per_device_batch_size=2, grad_accum=2), "deepspeed": {"stage": 2}}, "x")
    with pytest.raises(ConfigError, match="ZeRO partitions are per rank"):
        check_resumable(saved, zero, 4, "ckpt")
    check_resumable({"step": 5}, same_batch, 4, "ckpt")  # checkpoints from before the batch was recorded


A100, V100 = Gpu("NVIDIA A100-SXM4-80GB", (8, 0)), Gpu("Tesla V100-SXM2-32GB", (7, 0))


@pytest.mark.parametrize(("precision", "gpu", "expected"), [
    ("auto", A100, "bf16"), ("auto", V100, "no"), ("auto", None, "no"),
    ("bf16", A100, "bf16"), ("bf16", None, "bf16"), ("fp32", V100, "no"),
])
def test_precision_auto_never_chooses_emulated_bf16(precision: str, gpu: Gpu | None, expected: str) -> None:
    c = validate_config({"model": {"name_or_path": "m"}, "precision": precision}, "x")
    assert resolve_precision(c, "t5", gpu) == expected


def test_bf16_on_a_gpu_without_native_bf16_is_refused_in_one_line() -> None:
    c = validate_config({"model": {"name_or_path": "m"}, "precision": "bf16"}, "x")
    with pytest.raises(ConfigError, match=r"precision bf16: Tesla V100-SXM2-32GB \(compute capability 7.0\) has no "
                                          r"native bf16") as e:
        resolve_precision(c, "t5", V100)
    assert "\n" not in str(e.value) and "fp32" in (e.value.hint or "")


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model) -> None:
    import torch

    from trainer.hf import load_model

    grads = []
    for checkpointing in (False, True):
        model = load_model(str(tiny_model), checkpointing)
        on = getattr(type(model), "is_activation_checkpointing", None)  # older 5.x: `is_gradient_checkpointing` only
        assert (model.is_activation_checkpointing if on else model.is_gradient_checkpointing) == checkpointing
        model.train()
        torch.manual_seed(0)  # the same dropout masks (checkpointing replays the RNG state)
        ids = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
        loss = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=torch.tensor([[11, 12, 1], [13, 1, -100]])).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
