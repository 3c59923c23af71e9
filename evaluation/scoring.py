"""Scoring one predictions file: the one path from predictions to a typed `Scores`, and the JSON it is written as.

`score` turns predictions, references, tasks and categories into `Scores` (overall, per task and per category
figures, each {metric: value}, plus per-task sums for the bootstrap); `score_file` does it for a predictions file
(`python -m evaluation score`), `score_predictions` for parsed predictions with this process's shared scorer (the
report). On disk, groups are the original's flat `"{metric}_for_{group}"` keys: `group_key` writes them and
`split_group_key` reads them, nothing else does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.categories import TaskCategories
from evaluation.metrics import HEADLINE_METRICS, METRICS, ExampleScores, aggregate, score_examples, task_group
from evaluation.predictions import Prediction, read_predictions
from evaluation.rouge import shared_scorer
from ni.data import category_key

Figures = dict[str, float]  # {metric: value}, in METRICS order
_SEP = "_for_"


def group_key(metric: str, group: str) -> str:
    """The original's flat key of a group's figure, e.g. `rougeL_for_title_generation`."""
    return f"{metric}{_SEP}{group}"


def split_group_key(key: str) -> tuple[str, str] | None:
    """(metric, group) of a flat key; None when the key is not one (no `_for_`, or an unknown metric)."""
    metric, sep, group = key.partition(_SEP)
    return (metric, group) if sep and metric in METRICS else None


def flatten(groups: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{group: {metric: value}} as flat keys, group by group (the original's order)."""
    return {group_key(m, g): v for g, figures in groups.items() for m, v in figures.items()}


def group_value(flat: Mapping[str, float], group: str) -> float | None:
    """The value of the first flat key naming `group` (a headline has one per category), None without one."""
    return next((v for key, v in flat.items() if (k := split_group_key(key)) is not None and k[1] == group), None)


def groups_of(flat: Iterable[str]) -> list[str]:
    """The groups that flat keys name, each once, in first-seen order."""
    return list(dict.fromkeys(k[1] for key in flat if (k := split_group_key(key)) is not None))


@dataclass(frozen=True)
class TaskStat:
    """A task's number of examples, its per-metric sums (in example order) and its category key."""

    n: int
    sums: Figures
    category: str


@dataclass
class Scores:
    """A predictions file's figures: each metric's mean x 100 overall, per task and per category."""

    track: str
    num_examples: int
    overall: Figures
    per_task: dict[str, Figures]
    per_category: dict[str, Figures]
    tasks: dict[str, TaskStat] = field(default_factory=dict)
    truncated: bool = False  # a last line cut mid-way was left out (read leniently)

    def headline(self) -> dict[str, Figures]:
        """{category: {its headline metric: value}} for each evaluation category present, in the paper's order."""
        return {cat: {m: self.per_category[cat][m]} for cat, m in HEADLINE_METRICS.items() if cat in self.per_category}

    def per_task_metric(self, metric: str) -> dict[str, float]:
        return {task: figures[metric] for task, figures in self.per_task.items()}

    def task_pairs(self, metric: str) -> dict[str, tuple[float, int]]:
        """{task: (sum of `metric` over its examples, examples)}: what the bootstrap resamples."""
        return {t: (s.sums[metric], s.n) for t, s in self.tasks.items()}

    def to_json(self) -> dict[str, Any]:
        """metrics.json: the original's report (flat group keys)."""
        return {
            "overall": self.overall,
            "per_task": flatten(self.per_task),
            "per_category": flatten(self.per_category),
            "headline": flatten(self.headline()),
            "num_examples": self.num_examples,
            "track": self.track,
        }

    def to_cache(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "num_examples": self.num_examples,
            "overall": self.overall,
            "per_task": self.per_task,
            "per_category": self.per_category,
            "tasks": {t: [s.n, s.sums, s.category] for t, s in self.tasks.items()},
            "truncated": self.truncated,
        }

    @classmethod
    def from_cache(cls, obj: Any) -> Scores | None:
        """`to_cache`'s object back, or None for anything else (an old or damaged cache)."""
        try:
            return cls(
                str(obj["track"]), int(obj["num_examples"]), dict(obj["overall"]), dict(obj["per_task"]),
                dict(obj["per_category"]), {t: TaskStat(n, sums, cat) for t, (n, sums, cat) in obj["tasks"].items()},
                bool(obj["truncated"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def summarize(scores: ExampleScores, tasks: Sequence[str], categories: Sequence[str], track: str) -> Scores:
    """Per-example scores -> `Scores`. Every figure is a sequential sum in example order (the original's floats);
    a task's figures are its sums' means, the same additions in the same order as `mean_x100` over its examples."""
    if not len(scores):
        raise ValueError("no examples to aggregate")
    columns = [(m, scores.column(m)) for m in METRICS]
    stats: dict[str, tuple[list[float], str]] = {}
    by_cat: dict[str, list[int]] = {}
    for i, (t, c) in enumerate(zip(tasks, categories, strict=True)):
        s = stats.get(t)
        if s is None:
            s = stats[t] = ([0.0] * (len(METRICS) + 1), c)
        sums = s[0]
        for j, (_, col) in enumerate(columns):
            sums[j] += col[i]
        sums[-1] += 1
        members = by_cat.get(c)
        if members is None:
            by_cat[c] = [i]
        else:
            members.append(i)
    task_stats = {t: TaskStat(int(sums[-1]), dict(zip(METRICS, sums[:-1], strict=True)), c)
                  for t, (sums, c) in stats.items()}
    return Scores(
        track=track,
        num_examples=len(scores),
        overall=aggregate(scores),
        per_task={t: {m: round(100.0 * v / s.n, 4) for m, v in s.sums.items()} for t, s in task_stats.items()},
        per_category={c: aggregate(scores, idx) for c, idx in by_cat.items()},
        tasks=task_stats,
    )


def score(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tasks: Sequence[str],
    categories: Sequence[str],
    track: str = "default",
    xlingual_tokenizer: Any = None,
    workers: int | None = None,
    shared: bool = False,
) -> Scores:
    """`categories` are task categories as written (e.g. "Question Answering"). `shared`: score with this process's
    scorer of the track, whose caches serve the next file of the same test set (else a new scorer)."""
    scorer = shared_scorer(track, xlingual_tokenizer) if shared else None
    ex = score_examples(predictions, references, track, xlingual_tokenizer, workers, scorer=scorer)
    group_of = {t: task_group(t) for t in set(tasks)}  # once per distinct name, not per example
    key_of = {c: category_key(c) for c in set(categories)}
    return summarize(ex, [group_of[t] for t in tasks], [key_of[c] for c in categories], track)


def evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The original's metrics report (metrics.json) of predictions: `score(...)` with the same arguments, as JSON."""
    return score(*args, **kwargs).to_json()


def score_predictions(
    preds: Sequence[Prediction], categories: Sequence[str], track: str, xlingual_tokenizer: Any = "gpt2",
    workers: int | None = None,
) -> Scores:
    """Parsed predictions, scored by this process's shared scorer of the track."""
    return score([p.prediction for p in preds], [p.references for p in preds], [p.task for p in preds], categories,
                 track, xlingual_tokenizer, workers, shared=True)


def score_file(
    path: Path, data: Path | None, track: str, xlingual_tokenizer: Any = "gpt2", workers: int | None = None
) -> Scores:
    """A predictions file read strictly; lines without `Categories` take their task's from the data root."""
    preds = read_predictions(path)
    categories = TaskCategories(data)
    return score_predictions(preds, [categories(p, path) for p in preds], track, xlingual_tokenizer, workers)
