"""Tk-Instruct's metrics (reference.md section 3): exact match, ROUGE-1 and ROUGE-L, overall and grouped.

Semantics are the original's `compute_metrics` / `compute_grouped_metrics`: each metric is the maximum over a
prediction's references; a group's figure is the mean over its examples (summed in order, as the original did)
x 100, rounded to 4 decimals. Only the speed differs (see `evaluation.rouge`).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.rouge import RougeScorer, make_tokenizer
from ni.data import TASK_RENAMES, category_key

METRICS = ("exact_match", "rouge1", "rougeL")
# The metric each evaluation category is reported by in the paper.
HEADLINE_METRICS: dict[str, str] = {
    category_key(category): metric
    for category, metric in [
        ("Textual Entailment", "exact_match"),
        ("Cause Effect Classification", "exact_match"),
        ("Coreference Resolution", "exact_match"),
        ("Dialogue Act Recognition", "exact_match"),
        ("Answerability Classification", "exact_match"),
        ("Word Analogy", "exact_match"),
        ("Overlap Extraction", "rougeL"),
        ("Keyword Tagging", "rougeL"),
        ("Question Rewriting", "rougeL"),
        ("Title Generation", "rougeL"),
        ("Data to Text", "rougeL"),
        ("Grammar Error Correction", "rougeL"),
    ]
}

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_normalized: dict[str, str] = {}  # normalize_answer's results, kept for the next file of the same test set


def normalize_answer(s: str) -> str:
    """Lower-case, delete every character of string.punctuation, collapse whitespace."""
    return " ".join(s.lower().translate(_PUNCT_TABLE).split())


@dataclass
class ExampleScores:
    """Per-example metric values (max over references), in input order."""

    exact_match: list[int]
    rouge1: list[float]
    rougeL: list[float]

    def __len__(self) -> int:
        return len(self.exact_match)

    def column(self, metric: str) -> list[float] | list[int]:
        return getattr(self, metric)


def score_examples(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    track: str = "default",
    xlingual_tokenizer: Any = None,
    workers: int | None = None,
    scorer: RougeScorer | None = None,
) -> ExampleScores:
    """Score every prediction against its references. `xlingual_tokenizer`: see `evaluation.rouge.make_tokenizer`;
    `scorer`: one to reuse (with its caches) instead of a new one for the track."""
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"example {i}: references must be a non-empty list of strings")
    norm = _normalized
    if len(norm) > 1_000_000:
        norm.clear()

    def normalized(s: str) -> str:
        out = norm.get(s)
        if out is None:
            out = norm[s] = normalize_answer(s)
        return out

    em = [int(any(normalized(p) == normalized(r) for r in refs)) for p, refs in zip(predictions, references, strict=True)]
    if scorer is None:
        scorer = RougeScorer(make_tokenizer(track, xlingual_tokenizer))
    r1, rl = scorer.score(predictions, references, workers)
    return ExampleScores(em, r1, rl)


def _mean_x100(values: Sequence[float], indices: Sequence[int]) -> float:
    total: float = 0
    for i in indices:  # in order, one by one: the original's float sum, bit for bit
        total += values[i]
    return round(100.0 * total / len(indices), 4)


def aggregate(scores: ExampleScores, indices: Sequence[int] | None = None) -> dict[str, float]:
    """{metric: mean x 100 rounded to 4 decimals} over `indices` (all examples by default)."""
    idx = range(len(scores)) if indices is None else indices
    if not idx:
        raise ValueError("no examples to aggregate")
    return {m: _mean_x100(scores.column(m), idx) for m in METRICS}


def aggregate_groups(scores: ExampleScores, groups: Sequence[str]) -> dict[str, float]:
    """The original's grouped metrics: flat keys `"{metric}_for_{group}"`, groups in first-seen order."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: dict[str, float] = {}
    for group, idx in members.items():
        for metric, value in aggregate(scores, idx).items():
            out[f"{metric}_for_{group}"] = value
    return out


def task_group(task: str) -> str:
    return TASK_RENAMES.get(task, task)


def headline(per_category: dict[str, float]) -> dict[str, float]:
    """The paper's headline metric of each evaluation category present."""
    out = {}
    for cat, metric in HEADLINE_METRICS.items():
        key = f"{metric}_for_{cat}"
        if key in per_category:
            out[key] = per_category[key]
    return out


def evaluate(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tasks: Sequence[str],
    categories: Sequence[str],
    track: str = "default",
    xlingual_tokenizer: Any = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """The full metrics report. `categories` are task categories as written (e.g. "Question Answering")."""
    scores = score_examples(predictions, references, track, xlingual_tokenizer, workers)
    per_category = aggregate_groups(scores, [category_key(c) for c in categories])
    return {
        "overall": aggregate(scores),
        "per_task": aggregate_groups(scores, [task_group(t) for t in tasks]),
        "per_category": per_category,
        "headline": headline(per_category),
        "num_examples": len(scores),
        "track": track,
    }
