"""Scores of a predictions file, cached beside it by content hash (`.report-cache.json`).

The cached object is the `evaluation score` report (overall, per task, per category, headline) plus per-task
sums and counts for the bootstrap. The key is the sha256 of the predictions file + the track + a format version,
so a changed or re-written file is scored again and an unchanged one is read back in milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from evaluation.metrics import METRICS, aggregate, aggregate_groups, headline, score_examples, task_group
from evaluation.predictions import Prediction
from evaluation.rouge import shared_scorer
from ni.data import category_key
from ni.io import write_json

CACHE_NAME = ".report-cache.json"
CACHE_VERSION = 1


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def score_predictions(
    preds: Sequence[Prediction], categories: Sequence[str], track: str, xlingual_tokenizer: Any = "gpt2",
    workers: int | None = None,
) -> dict[str, Any]:
    """`evaluation.metrics.evaluate`'s report, plus `task_stats` {task: {n, sums: {metric: sum}}} and
    `task_category` {task: category key}. Scored by this process's shared scorer of the track, whose caches serve
    the next file of the same test set."""
    scores = score_examples(
        [p.prediction for p in preds], [list(p.references) for p in preds], track, xlingual_tokenizer, workers,
        scorer=shared_scorer(track, xlingual_tokenizer),
    )
    cat_keys = [category_key(c) for c in categories]
    tasks = [task_group(p.task) for p in preds]
    per_category = aggregate_groups(scores, cat_keys)
    stats: dict[str, dict[str, Any]] = {}
    task_cat: dict[str, str] = {}
    columns = [(m, scores.column(m)) for m in METRICS]
    for i, t in enumerate(tasks):
        s = stats.get(t)
        if s is None:
            s = stats[t] = {"n": 0, "sums": dict.fromkeys(METRICS, 0.0)}
            task_cat[t] = cat_keys[i]
        s["n"] += 1
        sums = s["sums"]
        for m, col in columns:  # in example order, as before: the same float sums
            sums[m] += col[i]
    return {
        "overall": aggregate(scores),
        "per_task": aggregate_groups(scores, tasks),
        "per_category": per_category,
        "headline": headline(per_category),
        "num_examples": len(scores),
        "track": track,
        "task_stats": stats,
        "task_category": task_cat,
    }


def cache_key(sha: str, track: str, extra: str = "") -> str:
    return f"v{CACHE_VERSION}:{track}:{sha}:{extra}"


def load_cached(run_dir: Path, key: str) -> dict[str, Any] | None:
    file = run_dir / CACHE_NAME
    try:
        data = orjson.loads(file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if isinstance(data, dict) and data.get("key") == key and isinstance(data.get("scores"), dict):
        return data["scores"]
    return None


def store_cached(run_dir: Path, key: str, scores: dict[str, Any]) -> None:
    """Best effort: a read-only run directory just means no cache."""
    with contextlib.suppress(OSError):
        write_json(run_dir / CACHE_NAME, {"key": key, "scores": scores})
