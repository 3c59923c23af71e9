"""Training throughput of a T5-shaped random model through our trainer: tokens/s and model FLOPs utilisation.

    python bench/gpu_train.py --shape xl --stage 0 --steps 20          # 1 GPU, bf16, plain Accelerate
    torchrun --nproc_per_node 1 bench/gpu_train.py --shape xl --stage 3  # ZeRO-3 (and 2) through accelerate
    python bench/gpu_train.py --shape tiny --steps 2                     # seconds on a CPU (the script's own check)

No downloads: the model is built from a config (T5 v1.1 / LM-adapt shapes: gated-GELU, untied head) with random
weights, the data is random token ids of fixed length (source 1024, target 128 by default: the paper's), so every
token is a real one. The timed window starts after --warmup steps. One JSON line on stdout: steps, tokens/s,
parameters, MFU = 6 x params x tokens/s / the GPU's dense bf16 peak (null where the peak is unknown or on CPU), peak
memory, and whether ZeRO-3 held only partitions at load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _common  # noqa: F401 -- puts this checkout on sys.path

# d_model, d_ff, layers, heads (d_kv 64): google/t5-v1_1-* and t5-*-lm-adapt
SHAPES = {"tiny": (64, 128, 2, 2), "base": (768, 2048, 12, 12), "large": (1024, 2816, 24, 16),
          "xl": (2048, 5120, 24, 32), "xxl": (4096, 10240, 24, 64)}
PEAK_BF16_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "B200": 2250e12, "L40S": 362e12, "A6000": 155e12}


def t5_config(shape: str, vocab: int) -> Any:
    from transformers import T5Config

    d_model, d_ff, layers, heads = SHAPES[shape]
    return T5Config(vocab_size=vocab, d_model=d_model, d_kv=64 if shape != "tiny" else 32, d_ff=d_ff,
                    num_layers=layers, num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="xl")
    p.add_argument("--stage", type=int, choices=[0, 2, 3], default=0, help="DeepSpeed ZeRO stage (0: none)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--source-length", type=int, default=1024)
    p.add_argument("--target-length", type=int, default=128)
    p.add_argument("--vocab", type=int, default=32128)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--out", type=Path, help="also write the JSON line here (stdout carries DeepSpeed's chatter too)")
    a = p.parse_args()
    if a.shape == "tiny":
        a.source_length, a.target_length, a.vocab = min(a.source_length, 64), min(a.target_length, 16), 256

    import torch
    from accelerate import Accelerator

    from trainer import config as c
    from trainer.accel import accelerator_kwargs, deepspeed_plugin, resolve_precision
    from trainer.dataset import Encoded
    from trainer.rundir import RunDir
    from trainer.train import StopFlag, train

    cuda = torch.cuda.is_available()
    total = a.warmup + a.steps
    cfg = c.RunConfig(
        model=c.ModelConfig(name_or_path=f"t5-{a.shape}-random"), do_predict=False, precision="auto",
        optim=c.OptimConfig(lr=1e-5, max_steps=total + 1, per_device_batch_size=a.batch_size, group_by_length=False,
                          gradient_checkpointing=a.gradient_checkpointing),
        deepspeed=c.DeepSpeedConfig(stage=a.stage),  # type: ignore[arg-type]
        checkpoint=c.CheckpointConfig(every_steps=10**9, save_final_model=False),
        logging=c.LoggingConfig(every_steps=10**9, progress=False),
    )
    mixed = resolve_precision(cfg, "t5")
    accelerator = Accelerator(mixed_precision=mixed, deepspeed_plugin=deepspeed_plugin(cfg, mixed),
                              **accelerator_kwargs(cfg, cuda))
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(t5_config(a.shape, a.vocab))  # ZeRO-3: built partitioned (zero.Init)
    partitioned = any(hasattr(q, "ds_id") for q in model.parameters())
    params = sum(getattr(q, "ds_numel", q.numel()) for q in model.parameters())
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    rng = random.Random(0)
    n = a.batch_size * accelerator.num_processes * (total + 2)
    data = Encoded(ids=[str(i) for i in range(n)], tasks=["t"] * n,
                   input_ids=[[rng.randrange(2, a.vocab) for _ in range(a.source_length - 1)] + [1] for _ in range(n)],
                   labels=[[[rng.randrange(2, a.vocab) for _ in range(a.target_length - 1)] + [1]] for _ in range(n)])
    stamps: list[float] = []

    class Timed(Exception):
        """Raised at the forward after the timed window: no final checkpoint of a multi-GB model is written."""

    def stamp(*_: Any) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) > total:
            raise Timed

    model.register_forward_pre_hook(stamp)
    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(Timed):
        train(cfg, RunDir(tmp), accelerator, model, SimpleNamespace(pad_token_id=0), lambda epoch: data,
              lambda net: None, StopFlag())
    secs = stamps[total] - stamps[a.warmup]
    tok_s = a.steps * a.batch_size * accelerator.num_processes * (a.source_length + a.target_length) / secs
    peak = peak_flops()
    result = {"shape": a.shape, "stage": a.stage, "precision": mixed, "device": accelerator.device.type,
              "gpu": torch.cuda.get_device_name() if cuda else None, "params": params, "steps": a.steps,
              "batch_size": a.batch_size, "source_length": a.source_length, "target_length": a.target_length,
              "tokens_per_s": round(tok_s, 1), "mfu": round(6 * params * tok_s / peak, 4) if peak else None,
              "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
              "loaded_partitioned": partitioned, "gradient_checkpointing": a.gradient_checkpointing}
    if accelerator.is_main_process:
        print(json.dumps(result))
        if a.out is not None:
            a.out.write_text(json.dumps(result) + "\n")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
