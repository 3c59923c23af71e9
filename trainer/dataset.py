"""Tokenized train/eval sets, an on-disk encoding cache, length-grouped batches and dynamic-padding collation.

The encoded set of a split is cached under `$TK_CACHE_DIR` (default `~/.cache/tk-lab/encoded`), keyed by the
content of the split's task files + the encoding + the tokenizer + lengths + caps + seed, so the runs of a sweep
that share those do not encode again.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ni.data import SplitData, load_split
from ni.encoding import TK_INSTRUCT, PromptEncoder
from ni.io import atomic_open


@dataclass
class Encoded:
    """One split, tokenized. `labels[i]` holds the token ids of every reference of instance i."""

    ids: list[str]
    tasks: list[str]
    input_ids: list[list[int]]
    labels: list[list[list[int]]]

    def __len__(self) -> int:
        return len(self.ids)


def cache_dir() -> Path:
    return Path(os.environ.get("TK_CACHE_DIR", Path.home() / ".cache" / "tk-lab" / "encoded"))


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return hashlib.sha256(repr(tokenizer).encode()).hexdigest()
    spec = orjson.loads(backend.to_str())
    spec.pop("truncation", None)  # call-time state that the tokenizer carries between calls
    spec.pop("padding", None)
    return hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _split_fingerprint(data: SplitData) -> str:
    h = hashlib.sha256()
    for task in data.tasks:
        h.update(task.name.encode())
        h.update(hashlib.sha256((data.root / "tasks" / f"{task.name}.json").read_bytes()).digest())
    return h.hexdigest()


def encode_split(
    data: SplitData,
    encoding: str,
    tokenizer: Any,
    max_source_length: int,
    max_target_length: int,
    seed: int | str,
    cache_key: dict[str, Any] | None = None,
) -> Encoded:
    """Tokenize a split with one encoding, through the on-disk cache when `cache_key` is given."""
    path = None
    if cache_key is not None:
        key = dict(cache_key, encoding=encoding, split=data.split, track=data.track, seed=str(seed),
                   tasks=_split_fingerprint(data), tokenizer=_tokenizer_fingerprint(tokenizer),
                   lengths=[max_source_length, max_target_length], version=1)
        digest = hashlib.sha256(orjson.dumps(key, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        path = cache_dir() / f"{data.split}-{digest}.json"
        if path.is_file():
            try:
                return Encoded(**orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, TypeError):
                pass  # a damaged cache entry is rebuilt below
    pairs = list(data)
    encoder = PromptEncoder(encoding, tokenizer, max_source_length, seed=seed)  # type: ignore[arg-type]
    sources = encoder.encode_many(pairs)
    targets = sorted({o for _, inst in pairs for o in inst.outputs})
    target_ids = dict(zip(targets, tokenizer(targets, max_length=max_target_length, truncation=True)["input_ids"],
                          strict=True)) if targets else {}
    enc = Encoded(
        ids=[inst.id for _, inst in pairs],
        tasks=[task.name for task, _ in pairs],
        input_ids=[list(s.input_ids or []) for s in sources],
        labels=[[list(target_ids[o]) for o in inst.outputs] for _, inst in pairs],
    )
    if path is not None:
        with atomic_open(path, "wb") as fh:
            fh.write(orjson.dumps(enc.__dict__))
    return enc


def load_train_set(cfg: Any, tokenizer: Any, data_root: str, epoch: int) -> Encoded:
    """The training set of one epoch (the encoding only varies by epoch for the Tk-Instruct mixture)."""
    d = cfg.data
    data = load_split(data_root, d.track, "train", d.max_instances_per_task, cfg.seed, d.task_limit)
    if data is None or len(data) == 0:
        from ni.errors import DataError

        raise DataError(f"{data_root}: the {d.track} track has no training instances (splits/{d.track}/train_tasks.txt)")
    seed: int | str = f"{cfg.seed}:{epoch}" if d.train_encoding == TK_INSTRUCT else cfg.seed
    return encode_split(data, d.train_encoding, tokenizer, d.max_source_length, d.max_target_length, seed,
                        cache_key={"caps": [d.max_instances_per_task, d.task_limit]})


def pick_labels(enc: Encoded, seed: int, epoch: int) -> list[list[int]]:
    """One reference per instance, drawn at random per epoch (seeded by instance id, so resume-safe)."""
    out = []
    for iid, refs in zip(enc.ids, enc.labels, strict=True):
        out.append(refs[0] if len(refs) == 1 else random.Random(f"{seed}:{epoch}:{iid}").choice(refs))
    return out


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool, multiple_of: int
) -> list[list[int]]:
    """Every example once per epoch, in batches; the batch count is padded (cyclically) to `multiple_of`
    (= world size x grad accumulation) so every rank does the same number of optimizer steps.

    Length grouping: shuffle, cut into mega-batches of 50 batches, sort each by length, cut into batches, then
    shuffle the batch order -- much less padding than random batches, the same examples per epoch.
    """
    rng = random.Random(f"{seed}:batches:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = batch_size * 50
        order = [i for k in range(0, len(order), mega)
                 for i in sorted(order[k : k + mega], key=lambda i: -lengths[i])]
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    total = math.ceil(len(batches) / multiple_of) * multiple_of
    return [batches[k % len(batches)] for k in range(total)]


def collate(inputs: Sequence[list[int]], labels: Sequence[list[int]] | None, pad_id: int) -> dict[str, Any]:
    """Pad to the longest sequence of the batch; label padding is -100 (ignored by the loss)."""
    import torch

    width = max(len(x) for x in inputs)
    batch: dict[str, Any] = {
        "input_ids": torch.tensor([x + [pad_id] * (width - len(x)) for x in inputs], dtype=torch.long),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in inputs], dtype=torch.long),
    }
    if labels is not None:
        lw = max(len(y) for y in labels)
        batch["labels"] = torch.tensor([y + [-100] * (lw - len(y)) for y in labels], dtype=torch.long)
    return batch
