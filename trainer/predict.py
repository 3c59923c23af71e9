"""Batched greedy generation: batches sorted by source length, each rank a shard, gathered once, input order.

For encoder-decoder models whose generation config asks for nothing but greedy decoding (eos, pad, suppressed
tokens), a lean loop replaces `model.generate`: the encoder runs once per batch, each step feeds one token
through the cached decoder, rows that emitted EOS leave the batch (their cache rows are dropped), and the batch
ends when every row has. Same tokens as `generate` (tested); anything else falls back to `generate`.

Resumable: with `partial=DIR`, each rank appends every finished batch to DIR/rank-R.jsonl ({"i": index, "text"}),
and a later call skips the indices found there (any rank's file, any earlier world size). With `should_stop`, the
ranks agree before each batch whether to stop; then `PredictionStopped` is raised and the finished batches stay
in DIR, so a run preempted while predicting resumes where it was.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from trainer.dataset import collate
from trainer.train import agree

# Generation-config keys the lean loop honours, or that greedy decoding ignores (we always pass do_sample=False,
# num_beams=1, max_new_tokens); any other key set to a non-empty value asks for a logits processor: use generate.
_LEAN_KEYS = {"decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id", "suppress_tokens",
              "max_length", "max_new_tokens", "transformers_version", "_from_model_config", "use_cache",
              "do_sample", "num_beams", "temperature", "top_k", "top_p", "typical_p", "min_p", "length_penalty",
              "early_stopping"}


class PredictionStopped(Exception):
    """A stop signal came while predicting; what was predicted so far is kept for the next attempt."""

    def __init__(self, done: int, total: int):
        super().__init__(f"prediction stopped by a signal after {done} of {total} examples")
        self.done, self.total = done, total


def generate(
    model: Any,
    tokenizer: Any,
    input_ids: Sequence[list[int]],
    accelerator: Any,
    batch_size: int = 32,
    max_new_tokens: int = 128,
    progress: Any = None,
    partial: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    kept: dict[int, str] | None = None,
) -> list[str]:
    """Greedy predictions for every input, in input order, on every rank. `kept`: `read_partial(partial)` when the
    caller has read it already."""
    import torch

    rank, world = accelerator.process_index, accelerator.num_processes
    done = kept if kept is not None else read_partial(partial)
    order = sorted((i for i in range(len(input_ids)) if i not in done), key=lambda i: (-len(input_ids[i]), i))
    shard = order[rank::world]
    rounds = math.ceil(math.ceil(len(order) / world) / batch_size)  # the same on every rank
    sink = _open_partial(partial, rank)
    delay = float(os.environ.get("TK_DEBUG_PREDICT_DELAY", "0"))  # debug knob: slow batches down (tests)
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    sharded = world > 1 and params_sharded()
    decode = greedy if lean_ok(net) else generate_tokens
    mine: list[tuple[int, str]] = []
    try:
        with torch.inference_mode():
            for r in range(rounds):
                if should_stop is not None and agree(accelerator, should_stop()):
                    finished = sum(min(len(order[k::world]), r * batch_size) for k in range(world))
                    raise PredictionStopped(len(done) + finished, len(input_ids))
                idx = shard[r * batch_size : (r + 1) * batch_size]
                if not idx and not sharded:
                    continue
                # A rank out of examples still runs the pass on a dummy row (its result dropped): under ZeRO-3 every
                # forward all-gathers parameters with the other ranks, so a skipped pass would hang them.
                rows = [input_ids[i] for i in idx] or [input_ids[order[0]][:1]]
                batch = collate(rows, None, tokenizer.pad_token_id)
                tokens = decode(net, batch["input_ids"].to(accelerator.device),
                                batch["attention_mask"].to(accelerator.device), max_new_tokens)
                texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)[: len(idx)]
                mine.extend(zip(idx, texts, strict=True))
                if sink is not None:
                    sink.write(b"".join(orjson.dumps({"i": i, "text": t}) + b"\n" for i, t in zip(idx, texts, strict=True)))
                    sink.flush()
                if delay:
                    time.sleep(delay)
                if progress is not None:
                    progress(len(idx) * world)
    finally:
        net.train(was_training)
        if sink is not None:
            sink.close()
    preds = [""] * len(input_ids)
    for i, text in [*done.items(), *_gather(mine, accelerator)]:
        preds[i] = text
    return preds


def read_partial(folder: Path | None) -> dict[int, str]:
    """The predictions earlier attempts kept (index -> text); a line cut by a hard kill is ignored."""
    found: dict[int, str] = {}
    if folder is None or not folder.is_dir():
        return found
    for path in sorted(folder.glob("rank-*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                row = orjson.loads(line)
                found[int(row["i"])] = str(row["text"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return found


def _open_partial(folder: Path | None, rank: int) -> Any:
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return open(folder / f"rank-{rank}.jsonl", "ab")  # noqa: SIM115 - closed in generate's finally


def params_sharded() -> bool:
    """True under ZeRO-3: each forward pass gathers the parameters from every rank, so all ranks must run it."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


def lean_ok(net: Any) -> bool:
    """True when `greedy` reproduces `net.generate`: an encoder-decoder with a plain greedy generation config."""
    if params_sharded():  # generate keeps sharded ranks stepping in lockstep (synced_gpus); the lean loop does not
        return False
    gen = getattr(net, "generation_config", None)
    if not getattr(net.config, "is_encoder_decoder", False) or gen is None or gen.decoder_start_token_id is None:
        return False
    extra = {k: v for k, v in gen.to_diff_dict().items() if k not in _LEAN_KEYS and v not in (None, False)}
    return not extra and gen.eos_token_id is not None


def generate_tokens(net: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int) -> list[list[int]]:
    import torch.distributed as dist

    synced = params_sharded() and dist.is_initialized() and dist.get_world_size() > 1
    out = net.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                       do_sample=False, num_beams=1, synced_gpus=synced)
    return out.tolist()


def greedy(net: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int) -> list[list[int]]:
    """Greedy tokens per row (EOS included when emitted), dropping finished rows from the batch as it goes."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import BaseModelOutput

    gen = net.generation_config
    eos = torch.tensor([gen.eos_token_id] if isinstance(gen.eos_token_id, int) else gen.eos_token_id,
                       device=input_ids.device)
    suppress = list(gen.suppress_tokens or [])
    hidden = net.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    rows = input_ids.shape[0]
    step = torch.full((rows, 1), gen.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    alive = list(range(rows))
    for _ in range(max_new_tokens):
        logits = net(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention_mask,
                     decoder_input_ids=step, past_key_values=cache, use_cache=True).logits[:, -1, :]
        if suppress:
            logits[:, suppress] = -float("inf")
        step = logits.argmax(dim=-1, keepdim=True)
        done = torch.isin(step[:, 0], eos)
        for row, token in zip(alive, step[:, 0].tolist(), strict=True):
            tokens[row].append(token)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero()[:, 0]
            hidden, attention_mask, step = hidden[keep], attention_mask[keep], step[keep]
            cache.batch_select_indices(keep)
            alive = [alive[j] for j in keep.tolist()]
    return tokens


def _gather(items: list[tuple[int, str]], accelerator: Any) -> list[tuple[int, str]]:
    if accelerator.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return list(gather_object(items))
