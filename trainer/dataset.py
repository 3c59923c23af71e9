"""Tokenized train/eval sets, an on-disk encoding cache, length-grouped batches and dynamic-padding collation.

The encoded set of a split is cached under `$TK_CACHE_DIR` (default `~/.cache/tk-lab/encoded`) as a memory-mapped
table (trainer/encoded.py), keyed by everything it was computed from: the content of the split's task files (hashes
remembered by file stat, so a hit reads no task file), the selection (track, split, caps, seed, task limit), the
encoding and its seed, the tokenizer and the lengths. A hit maps the entry and never loads the raw split. A missing
entry is built by one process under a file lock (the others wait, then map it) and appears whole (temp dir +
rename) or not at all. The key is stored in the entry and checked on every reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ni.data import SplitData, SplitRef
from ni.encoding import TK_INSTRUCT, PromptEncoder
from ni.errors import DataError
from ni.fingerprint import HashCache
from trainer.encoded import EncodedTable, References, Rows, TableBuilder

CACHE_FORMAT = 2  # bump when the entry layout or the encoder's output changes


@dataclass(eq=False)
class Encoded:
    """One split, tokenized. `labels[i]` holds the token ids of every reference of instance i."""

    ids: Sequence[str]
    tasks: Sequence[str]
    input_ids: Sequence[list[int]]
    labels: Sequence[list[list[int]]]

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Encoded) and all(
            len(getattr(self, f)) == len(getattr(other, f)) and list(getattr(self, f)) == list(getattr(other, f))
            for f in ("ids", "tasks", "input_ids", "labels"))

    @classmethod
    def of(cls, table: EncodedTable) -> Encoded:
        return cls(table.ids, table.tasks, table.input_ids, table.labels)


def source_lengths(enc: Encoded) -> list[int]:
    rows = enc.input_ids
    return rows.lengths() if isinstance(rows, Rows) else [len(x) for x in rows]


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


def split_fingerprint(ref: SplitRef, hashes: HashCache | None = None) -> str:
    """sha256 over the split's task names and file contents, in split order; a stat per file once hashed."""
    own = hashes is None
    hashes = hashes or HashCache(cache_dir() / "file-hashes.json")
    h = hashlib.sha256()
    for name in ref.task_names():
        h.update(name.encode() + b"\0" + bytes.fromhex(hashes.sha256(ref.task_file(name))))
    if own:
        with contextlib.suppress(OSError):  # a read-only cache dir only costs the hashing next time
            hashes.save()
    return h.hexdigest()


def cache_identity(data: SplitData | SplitRef, encoding: str, tokenizer: Any, max_source_length: int,
                   max_target_length: int, seed: int | str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything an encoded split is computed from (the cache key, stored in the entry and checked on reuse)."""
    ref = data.ref() if isinstance(data, SplitData) else data
    return {**(extra or {}), **ref.selection(), "encoding": encoding, "encoding_seed": str(seed),
            "task_files": split_fingerprint(ref), "tokenizer": _tokenizer_fingerprint(tokenizer),
            "lengths": [max_source_length, max_target_length], "format": CACHE_FORMAT}


def entry_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(orjson.dumps(key, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return cache_dir() / f"{key['split']}-{digest}"


def encode_split(
    data: SplitData | SplitRef,
    encoding: str,
    tokenizer: Any,
    max_source_length: int,
    max_target_length: int,
    seed: int | str,
    cache_key: dict[str, Any] | None = None,
) -> Encoded:
    """Tokenize a split with one encoding; through the on-disk cache when `cache_key` is given (extra identity,
    on top of everything `cache_identity` derives). A `SplitRef` is loaded only if the cache misses."""
    if cache_key is None:
        split = data if isinstance(data, SplitData) else data.load()
        return Encoded.of(_encode(split, encoding, tokenizer, max_source_length, max_target_length, seed))
    key = cache_identity(data, encoding, tokenizer, max_source_length, max_target_length, seed, cache_key)
    entry = entry_path(key)
    hit = _open_entry(entry, key, discard=False)
    if hit is not None:
        return Encoded.of(hit)
    with _locked(entry):
        hit = _open_entry(entry, key, discard=True)  # another process may have built it while we waited
        if hit is None:
            split = data if isinstance(data, SplitData) else data.load()
            table = _encode(split, encoding, tokenizer, max_source_length, max_target_length, seed)
            _write_entry(entry, key, table)
            hit = _open_entry(entry, key, discard=False)
            assert hit is not None, entry
    return Encoded.of(hit)


def _encode(data: SplitData, encoding: str, tokenizer: Any, max_source_length: int, max_target_length: int,
            seed: int | str) -> EncodedTable:
    encoder = PromptEncoder(encoding, tokenizer, max_source_length, seed=seed)  # type: ignore[arg-type]
    builder = TableBuilder()
    for task, insts in zip(data.tasks, data.instances, strict=True):  # a task at a time: bounded memory
        sources = encoder.encode_many([(task, inst) for inst in insts])
        targets = sorted({o for inst in insts for o in inst.outputs})
        target_ids = dict(zip(targets, tokenizer(targets, max_length=max_target_length, truncation=True)["input_ids"],
                              strict=True)) if targets else {}
        builder.add_task(task.name, [inst.id for inst in insts], [list(s.input_ids or []) for s in sources],
                         [[target_ids[o] for o in inst.outputs] for inst in insts])
    return builder.finish()


def _open_entry(entry: Path, key: dict[str, Any], discard: bool) -> EncodedTable | None:
    """The entry mapped, if it is there and was built from `key`; with `discard`, a mismatched or damaged entry is
    removed (one line on stderr) so that the caller rebuilds it."""
    meta_file = entry / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = orjson.loads(meta_file.read_bytes())
        if meta.get("key") == key:
            return EncodedTable.open(entry, meta["tasks"])
        differs = sorted(k for k in {*key, *meta.get("key", {})} if meta["key"].get(k) != key.get(k))
        why = f"built for another {', '.join(differs)}"
    except (orjson.JSONDecodeError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        why = f"unreadable ({type(e).__name__})"
    if discard:
        print(f"tk: discarding encoded-split cache entry {entry}: {why}; rebuilding", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
    return None


@contextlib.contextmanager
def _locked(entry: Path) -> Iterator[None]:
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_entry(entry: Path, key: dict[str, Any], table: EncodedTable) -> None:
    """Columns, then meta.json (the mark of a whole entry), in a temp dir renamed into place: a kill at any point
    leaves either no entry or a whole one."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
    try:
        table.write(tmp)
        with open(tmp / "meta.json", "wb") as fh:
            fh.write(orjson.dumps({"key": key, "tasks": table.task_names, "instances": len(table.input_ids)}))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        if entry.exists():
            shutil.rmtree(entry)
        os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train_split(cfg: Any, data_root: str) -> SplitRef:
    d = cfg.data
    return SplitRef(Path(data_root), d.track, "train", d.max_instances_per_task, cfg.seed, d.task_limit)


def train_encoding_seed(cfg: Any, epoch: int) -> int | str:
    """The encoding only varies by epoch for the Tk-Instruct mixture."""
    return f"{cfg.seed}:{epoch}" if cfg.data.train_encoding == TK_INSTRUCT else cfg.seed


def load_train_set(cfg: Any, tokenizer: Any, data_root: str, epoch: int) -> Encoded:
    """The training set of one epoch (from the cache when it holds it: the raw split is then not read)."""
    d = cfg.data
    enc = encode_split(train_split(cfg, data_root), d.train_encoding, tokenizer, d.max_source_length,
                       d.max_target_length, train_encoding_seed(cfg, epoch), cache_key={})
    if len(enc) == 0:
        raise DataError(f"{data_root}: the {d.track} track has no training instances (splits/{d.track}/train_tasks.txt)")
    return enc


class PickedLabels(Sequence[list[int]]):
    """One reference per instance (index `choice[i]` among its references)."""

    def __init__(self, labels: Sequence[list[list[int]]], choice: list[int]):
        self.labels, self.choice = labels, choice

    def __len__(self) -> int:
        return len(self.choice)

    def __getitem__(self, i: int) -> list[int]:  # type: ignore[override]
        if isinstance(self.labels, References):
            return self.labels.one(i, self.choice[i])
        return self.labels[i][self.choice[i]]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(
            a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


def pick_labels(enc: Encoded, seed: int, epoch: int) -> PickedLabels:
    """One reference per instance, drawn at random per epoch (seeded by instance id, so resume-safe)."""
    labels = enc.labels
    counts = (labels.ref_offsets[1:] - labels.ref_offsets[:-1]).tolist() if isinstance(labels, References) \
        else [len(r) for r in labels]
    choice = [0] * len(counts)
    for i, n in enumerate(counts):
        if n > 1:  # the same draw as random.choice(refs): an index below n
            choice[i] = random.Random(f"{seed}:{epoch}:{enc.ids[i]}").choice(range(n))
    return PickedLabels(labels, choice)


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
