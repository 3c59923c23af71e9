"""Build a run's encoded splits ahead of time (`launcher prepare SWEEP`), so that no GPU job encodes.

The entries are the ones the run itself asks for (trainer/run.py): its train set for every epoch it will see
(one entry, unless the Tk-Instruct mixture draws encodings per epoch), its dev set when it evaluates while training,
its test set when it predicts. Entries that several runs share are built once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ni.data import SplitRef, read_split
from ni.synthetic import ensure_default_data
from trainer.config import RunConfig
from trainer.dataset import cache_identity, encode_split, entry_path, train_encoding_seed, train_split
from trainer.hf import load_tokenizer, resolve_model_path


@dataclass
class Prepared:
    split: str
    entry: Path
    instances: int
    built: bool
    seconds: float


def planned_epochs(cfg: RunConfig, train_instances: int) -> int:
    """How many epochs a run starts (what trainer/train.py computes from the same numbers)."""
    o = cfg.optim
    world = cfg.world_size or 1
    per_epoch = max(1, math.ceil(math.ceil(train_instances / o.per_device_batch_size) / (world * o.grad_accum)))
    total = o.max_steps if o.max_steps is not None else math.ceil(o.epochs * per_epoch)
    return max(1, math.ceil(total / per_epoch))


def prepare_run(cfg: RunConfig) -> list[Prepared]:
    """Make sure every encoded split `cfg` reads is in the cache; returns what was found or built."""
    if cfg.model.name_or_path.startswith("baseline:"):
        return []  # baselines read the raw test split and encode nothing
    root = cfg.data.root or str(ensure_default_data())
    tokenizer = load_tokenizer(cfg.model.tokenizer or resolve_model_path(cfg.model.name_or_path, root))
    d = cfg.data
    out: list[Prepared] = []

    def one(ref: SplitRef, encoding: str, seed: int | str) -> int:
        key = cache_identity(ref, encoding, tokenizer, d.max_source_length, d.max_target_length, seed, {})
        entry = entry_path(key)
        had = (entry / "meta.json").is_file()
        t0 = time.perf_counter()
        n = len(encode_split(ref, encoding, tokenizer, d.max_source_length, d.max_target_length, seed, cache_key={}))
        out.append(Prepared(ref.split, entry, n, not had, time.perf_counter() - t0))
        return n

    if cfg.do_train:
        train = train_split(cfg, root)
        n = one(train, d.train_encoding, train_encoding_seed(cfg, 0))
        if train_encoding_seed(cfg, 1) != train_encoding_seed(cfg, 0):
            for epoch in range(1, planned_epochs(cfg, n)):
                one(train, d.train_encoding, train_encoding_seed(cfg, epoch))
        if (cfg.eval.every_steps or cfg.eval.dense_every) and read_split(root, d.track, "dev") is not None:
            one(SplitRef(Path(root), d.track, "dev", d.max_dev_instances_per_task, cfg.seed), d.eval_encoding, cfg.seed)
    if cfg.do_predict:
        one(SplitRef(Path(root), d.track, "test", d.max_instances_per_eval_task, cfg.seed), d.eval_encoding, cfg.seed)
    return out
