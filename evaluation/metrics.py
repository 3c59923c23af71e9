"""Tk-Instruct's metrics (reference.md section 3): exact match, ROUGE-1 and ROUGE-L per example, and their means.

Semantics are the original's `compute_metrics` / `compute_grouped_metrics`: each metric is the maximum over a
prediction's references; a group's figure is the mean over its examples (summed in order, as the original did)
x 100, rounded to 4 decimals. Only the speed differs (see `evaluation.rouge`). Grouping and the report a
predictions file gets are `evaluation.scoring`'s.
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

    em = [1 if p in refs else int(any(normalized(p) == normalized(r) for r in refs))  # equal text: equal normalized
          for p, refs in zip(predictions, references, strict=True)]
    if scorer is None:
        scorer = RougeScorer(make_tokenizer(track, xlingual_tokenizer))
    r1, rl = scorer.score(predictions, references, workers)
    return ExampleScores(em, r1, rl)


def mean_x100(values: Sequence[float], indices: Sequence[int]) -> float:
    total: float = 0
    for i in indices:  # in order, one by one: the original's float sum, bit for bit
        total += values[i]
    return round(100.0 * total / len(indices), 4)


def aggregate(scores: ExampleScores, indices: Sequence[int] | None = None) -> dict[str, float]:
    """{metric: mean x 100 rounded to 4 decimals} over `indices` (all examples by default)."""
    idx = range(len(scores)) if indices is None else indices
    if not idx:
        raise ValueError("no examples to aggregate")
    return {m: mean_x100(scores.column(m), idx) for m in METRICS}


def task_group(task: str) -> str:
    return TASK_RENAMES.get(task, task)
