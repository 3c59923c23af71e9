"""Batched greedy generation: batches sorted by source length, each rank a shard, gathered once, input order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainer.dataset import collate


def generate(
    model: Any,
    tokenizer: Any,
    input_ids: Sequence[list[int]],
    accelerator: Any,
    batch_size: int = 32,
    max_new_tokens: int = 128,
    progress: Any = None,
) -> list[str]:
    """Greedy predictions for every input, in input order, on every rank."""
    import torch

    order = sorted(range(len(input_ids)), key=lambda i: (-len(input_ids[i]), i))
    shard = order[accelerator.process_index :: accelerator.num_processes]
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    mine: list[tuple[int, str]] = []
    with torch.no_grad():
        for k in range(0, len(shard), batch_size):
            idx = shard[k : k + batch_size]
            batch = collate([input_ids[i] for i in idx], None, tokenizer.pad_token_id)
            out = net.generate(
                input_ids=batch["input_ids"].to(accelerator.device),
                attention_mask=batch["attention_mask"].to(accelerator.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
            )
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            mine.extend(zip(idx, texts, strict=True))
            if progress is not None:
                progress(len(idx) * accelerator.num_processes)
    net.train(was_training)
    gathered = _gather(mine, accelerator)
    preds = [""] * len(input_ids)
    for i, text in gathered:
        preds[i] = text
    return preds


def _gather(items: list[tuple[int, str]], accelerator: Any) -> list[tuple[int, str]]:
    if accelerator.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return list(gather_object(items))
