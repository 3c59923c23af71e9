"""The accelerator a model run works through: its precision for the GPU at hand, the DeepSpeed plugin, the
process group on CPU machines, the trackers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ni.errors import ConfigError
from trainer.config import RunConfig

DEEPSPEED_DIR = Path(__file__).parent / "deepspeed"


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]

    @property
    def native_bf16(self) -> bool:
        return self.capability >= (8, 0)  # Ampere and newer; older GPUs only emulate bf16 (many times slower)


def local_gpu() -> Gpu | None:
    import torch

    if not torch.cuda.is_available():
        return None
    cap = torch.cuda.get_device_capability()
    return Gpu(torch.cuda.get_device_name(), (int(cap[0]), int(cap[1])))


def resolve_precision(cfg: RunConfig, model_type: str, gpu: Gpu | None | str = "detect") -> str:
    """accelerate's mixed_precision value: bf16 where the GPU computes it natively, fp32 on CPU; never fp16 for
    T5, never emulated bf16. `gpu`: the device to decide for (None: no GPU); detected by default."""
    if cfg.precision == "fp16" and model_type in {"t5", "mt5", "umt5", "longt5"}:
        raise ConfigError(
            f"precision fp16 with a {model_type} model: T5 activations overflow in fp16 (NaN losses)",
            hint="Use precision: bf16 on GPUs that support it, or fp32.",
        )
    device = local_gpu() if isinstance(gpu, str) else gpu
    if cfg.precision == "auto":
        return "bf16" if device is not None and device.native_bf16 else "no"
    if cfg.precision == "bf16" and device is not None and not device.native_bf16:
        raise ConfigError(
            f"precision bf16: {device.name} (compute capability {device.capability[0]}.{device.capability[1]}) has no "
            "native bf16; it would be emulated, many times slower",
            hint="Use precision: fp32 (or auto) on this GPU, or GPUs of compute capability 8.0+ (A100, H100, L40).",
        )
    return {"fp32": "no"}.get(cfg.precision, cfg.precision)


def deepspeed_plugin(cfg: RunConfig, mixed_precision: str) -> Any:
    """accelerate's DeepSpeed plugin from the ZeRO config kept in the repo, with its "auto" values filled."""
    if cfg.deepspeed.stage == 0:
        return None
    from accelerate import DeepSpeedPlugin

    ds = json.loads((DEEPSPEED_DIR / f"zero{cfg.deepspeed.stage}.json").read_text())
    ds["train_micro_batch_size_per_gpu"] = cfg.optim.per_device_batch_size
    ds["gradient_accumulation_steps"] = cfg.optim.grad_accum
    ds["gradient_clipping"] = cfg.optim.max_grad_norm or 0.0
    ds["bf16"] = {"enabled": mixed_precision == "bf16"}
    if cfg.deepspeed.offload:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if cfg.deepspeed.stage == 3:
            ds["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": True}
    return DeepSpeedPlugin(hf_ds_config=ds)


def accelerator_kwargs(cfg: RunConfig, cuda: bool) -> dict[str, Any]:
    """Arguments of Accelerator beyond precision and plugins. On a CPU machine DeepSpeed ranks need gloo named
    explicitly: otherwise accelerate finds no backend for a non-`cpu` state and every rank believes it is alone
    (world size 1, rank 0) while DeepSpeed itself runs two."""
    if cuda or cfg.deepspeed.stage == 0:
        return {"cpu": not cuda}
    from accelerate.utils import InitProcessGroupKwargs

    return {"cpu": False, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}


def trackers(cfg: RunConfig, run_path: Path) -> list[str]:
    """The experiment trackers the config asks for. W&B without a key logs offline into RUN/tracking."""
    names = [name for name, on in (("tensorboard", cfg.logging.tensorboard), ("wandb", cfg.logging.wandb)) if on]
    if "wandb" in names and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")  # no key: log locally, `wandb sync` later
        os.environ.setdefault("WANDB_DIR", str(run_path / "tracking"))
    return names


def make_accelerator(cfg: RunConfig, run_path: Path, mixed_precision: str) -> Any:
    """The Accelerator for `cfg`: its precision, accumulation, ZeRO plugin and trackers; the world size is checked
    against the one the launcher planned."""
    import torch
    from accelerate import Accelerator

    names = trackers(cfg, run_path)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=cfg.optim.grad_accum,
        deepspeed_plugin=deepspeed_plugin(cfg, mixed_precision),
        log_with=names or None,
        project_dir=str(run_path / "tracking"),
        **accelerator_kwargs(cfg, torch.cuda.is_available()),
    )
    if cfg.world_size is not None and accelerator.num_processes != cfg.world_size:
        raise ConfigError(
            f"{run_path}: world size {accelerator.num_processes}, but the launcher planned {cfg.world_size} "
            f"(world_size in the run config)",
            hint=f"Start {cfg.world_size} ranks, e.g. torchrun --nproc_per_node {cfg.world_size} -m trainer run ...",
        )
    return accelerator


def flat_hparams(cfg: RunConfig) -> dict[str, Any]:
    """The config as flat scalars (what TensorBoard's hparams and W&B's config accept)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node if isinstance(node, int | float | str | bool) else str(node)

    walk("", cfg.model_dump(mode="json"))
    return out
