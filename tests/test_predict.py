"""The lean greedy loop gives `generate`'s tokens, also when rows finish at different steps and leave the batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.dataset import collate
from trainer.predict import generate_tokens, greedy, lean_ok


@pytest.fixture(scope="module")
def model_and_batch(tiny_model: Path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    net = AutoModelForSeq2SeqLM.from_pretrained(tiny_model).eval()
    texts = ["Definition: copy the input. Input: a b c d e f g h", "Input: x", "Output: the cat sat on the mat",
             "Positive Example 1 - Input: 1 2 3 Output: 3 2 1", "a", "Now complete the following example"]
    ids = [tok(t)["input_ids"] for t in texts]
    return net, collate(ids, None, tok.pad_token_id)


def strip(rows: list[list[int]], eos: set[int], pad: int) -> list[list[int]]:
    """generate's rows without the decoder start token, cut after the first EOS (then it pads)."""
    out = []
    for row in rows:
        kept: list[int] = []
        for t in row[1:]:
            kept.append(t)
            if t in eos:
                break
        out.append([t for t in kept if t != pad] if not eos & set(kept) else kept)
    return out


def test_greedy_equals_generate_with_rows_finishing_at_different_steps(model_and_batch) -> None:
    net, batch = model_and_batch
    gen = net.generation_config
    gen.suppress_tokens = [gen.pad_token_id]  # an untrained model's argmax is <pad>; make it say something
    with torch.inference_mode():
        free = generate_tokens(net, batch["input_ids"], batch["attention_mask"], 12)
    # Pick as EOS a token the untrained model emits at different steps in different rows, so rows finish apart.
    ends: dict[int, set[int]] = {}  # token -> the step at which it first appears in each row (12 if never)
    for t in {t for row in free for t in row[1:]}:
        ends[t] = {row[1:].index(t) if t in row[1:] else 12 for row in free}
    eos_token = max(ends, key=lambda t: (len(ends[t]), -t))
    assert len(ends[eos_token]) >= 2, "no token ends rows at different steps: the test would not test compaction"
    gen.eos_token_id = eos_token
    assert lean_ok(net)
    with torch.inference_mode():
        ours = greedy(net, batch["input_ids"], batch["attention_mask"], 12)
        theirs = generate_tokens(net, batch["input_ids"], batch["attention_mask"], 12)
    assert ours == strip(theirs, {eos_token}, gen.pad_token_id)
    lengths = {len(r) for r in ours}
    assert len(lengths) >= 2  # rows really left the batch at different steps


def test_a_generation_config_with_processors_falls_back_to_generate(model_and_batch) -> None:
    net, _ = model_and_batch
    assert lean_ok(net)
    net.generation_config.repetition_penalty = 1.3
    try:
        assert not lean_ok(net)
    finally:
        net.generation_config.repetition_penalty = 1.0


def test_the_lean_loop_is_bypassed_under_zero3(tiny_model: Path) -> None:
    """Under ZeRO-3 every forward gathers parameters from all ranks: `generate` (synced_gpus) keeps the ranks in
    lockstep until all are done, the lean loop (rows leave, the batch ends early) would not."""
    pytest.importorskip("deepspeed")
    from transformers import AutoModelForSeq2SeqLM
    from transformers.integrations import HfDeepSpeedConfig, unset_hf_deepspeed_config

    net = AutoModelForSeq2SeqLM.from_pretrained(tiny_model)
    assert lean_ok(net)
    kept = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert not lean_ok(net)
    finally:
        unset_hf_deepspeed_config()
        del kept
    assert lean_ok(net)
