"""A tiny T5 and a tokenizer trained here, for CPU runs and tests.

Both are saved with `save_pretrained`, so everything downstream goes through the same `from_pretrained` code
as a real checkpoint (`google/t5-xl-lm-adapt`, `allenai/tk-instruct-3b-def`, ...).

The tokenizer mirrors T5's shape: sentencepiece-style pieces over Metaspace words, whitespace (newlines included)
split away, `</s>` appended to every sequence, `<pad>` = 0 (also the decoder start token), `</s>` = 1, `<unk>` = 2.
Its model is BPE by default: on a small corpus the Unigram trainer stops far below the requested vocabulary and
spells common words letter by letter, which makes sequences twice as long and a tiny model much slower to learn.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ni.data import Task, parse_task
from ni.io import atomic_dir
from ni.prompt import definition_part, example_part, input_part

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, model: str = "bpe") -> Any:
    """Train a T5-shaped tokenizer (`model`: "bpe" or "unigram") on `texts`; returns a `PreTrainedTokenizerFast`."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>") if model == "bpe" else models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer: Any = (
        trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
        if model == "bpe"
        else trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
        )
    )
    tok.train_from_iterator(texts, trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=1 << 20
    )


def task_texts(tasks: Iterable[Task]) -> Iterator[str]:
    """The text a tokenizer for these tasks should cover, prompt template included."""
    for task in tasks:
        yield definition_part(task.definition)
        for kind, examples in (("Positive", task.positive_examples), ("Negative", task.negative_examples)):
            for k, ex in enumerate(examples, 1):
                yield example_part(kind, k, ex, add_explanation=True)
        for inst in task.instances:
            yield input_part(inst.input)
            yield from inst.outputs


def load_all_tasks(data_root: str | os.PathLike[str]) -> list[Task]:
    return [parse_task(p) for p in sorted(Path(data_root, "tasks").glob("*.json"))]


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    vocab_size: int = 2000,
    d_model: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on the data's text and save it with a randomly initialised small T5."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = train_tokenizer(task_texts(load_all_tasks(data_root)), vocab_size=vocab_size)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_model * 4,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,  # a few CPU minutes of training: regularisation only slows learning down
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # a generic config field that T5Config's typed signature does not list
        **{"decoder_start_token_id": tokenizer.pad_token_id},
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)
