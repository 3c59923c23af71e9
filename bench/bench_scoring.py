"""Scoring throughput: ours (evaluation.metrics) vs the original Tk-Instruct compute_metrics algorithm.

    python bench/bench_scoring.py [--pairs 20000] [--data ../shared/ni-sample] [--workers N]

Input: copy_input and copy_demo predictions on the default-track test split of the data root, repeated until there
are about --pairs prediction/reference pairs. A plain repeat would let our pair cache score every copy for free,
so by default each repeat k > 0 gets " variant<k>" appended to its predictions (every pair distinct, references
repeat as they do in real evaluation); --plain-repeat measures the exact repeat instead.

Reference: the original's algorithm, i.e. for every prediction/reference pair a new rouge_score RougeScorer for
ROUGE-1 and another for ROUGE-L (each tokenizing and stemming both strings), and exact match per reference; one
pass over the data (the original then ran more passes for per-task and per-category figures; not timed here).
Ours: `evaluation.scoring.evaluate` (overall + per task + per category). Both must give identical overall and
per-task numbers, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import string
import sys
from collections.abc import Sequence
from typing import Any

from _common import NI_SAMPLE, best_of
from rouge_score import rouge_scorer

from evaluation import metrics
from evaluation.baselines import baseline_rows
from evaluation.metrics import task_group
from evaluation.rouge import PARALLEL_MIN_PAIRS, available_cpus
from evaluation.scoring import evaluate


def _normalize(s: str) -> str:
    exclude = set(string.punctuation)
    return " ".join("".join(ch for ch in s.lower() if ch not in exclude).split())


def _rouge(metric: str, prediction: str, target: str) -> float:
    scorer = rouge_scorer.RougeScorer([metric], use_stemmer=True)
    return scorer.score(prediction=prediction, target=target)[metric].fmeasure


def reference_scores(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> list[tuple[float, float, float]]:
    """Per example (EM, ROUGE-1, ROUGE-L), each the max over references, computed the original's way."""
    out: list[tuple[float, float, float]] = []
    for pred, gold in zip(preds, refs, strict=True):
        em = max(_normalize(pred) == _normalize(g) for g in gold)
        r1 = max(_rouge("rouge1", pred, g) for g in gold)
        rl = max(_rouge("rougeL", pred, g) for g in gold)
        out.append((em, r1, rl))
    return out


def reference_metrics(scores: Sequence[tuple[float, float, float]]) -> dict[str, float]:
    """The original compute_metrics' aggregation: in-order sums, 100 x mean, round(., 4)."""
    em, r1, rl = 0.0, 0.0, 0.0
    for e, a, b in scores:
        em += e
        r1 += a
        rl += b
    n = len(scores)
    return {k: round(100.0 * v / n, 4) for k, v in (("exact_match", em), ("rouge1", r1), ("rougeL", rl))}


def reference_per_task(scores: Sequence[tuple[float, float, float]], tasks: Sequence[str]) -> dict[str, float]:
    groups: dict[str, list[tuple[float, float, float]]] = {}
    for s, t in zip(scores, tasks, strict=True):
        groups.setdefault(task_group(t), []).append(s)
    return {f"{m}_for_{g}": v for g, ss in groups.items() for m, v in reference_metrics(ss).items()}


def build_inputs(root: str, pairs: int, plain: bool) -> tuple[list[str], list[list[str]], list[str], list[str]]:
    rows = [r for name in ("copy_input", "copy_demo") for r in baseline_rows(name, root, "default")]
    per_round = sum(len(r["Instance"]["output"]) for r in rows)
    rounds = max(1, round(pairs / per_round))
    preds, refs, tasks, cats = [], [], [], []
    for k in range(rounds):
        suffix = "" if plain or k == 0 else f" variant{k}"
        for r in rows:
            preds.append(r["prediction"] + suffix)
            refs.append(r["Instance"]["output"])
            tasks.append(r["Task"])
            cats.append(r["Categories"][0])
    return preds, refs, tasks, cats


def fresh_evaluate(preds: list[str], refs: list[list[str]], tasks: list[str], cats: list[str],
                   workers: int | None) -> dict[str, Any]:
    metrics._normalized.clear()  # no exact-match memo from an earlier timed run
    return evaluate(preds, refs, tasks, cats, workers=workers)



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(NI_SAMPLE))
    ap.add_argument("--pairs", type=int, default=20_000, help="prediction/reference pairs (default 20000)")
    ap.add_argument("--workers", type=int, default=None, help="our process count for 'auto' (default: auto)")
    ap.add_argument("--plain-repeat", action="store_true", help="repeat predictions unchanged")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of ours (best is reported)")
    args = ap.parse_args()

    preds, refs, tasks, cats = build_inputs(args.data, args.pairs, args.plain_repeat)
    n_pairs = sum(len(r) for r in refs)
    distinct = sum(len(r) for _, r in {(p, tuple(r)) for p, r in zip(preds, refs, strict=True)})
    print(f"{len(preds)} predictions, {n_pairs} prediction/reference pairs ({distinct} in distinct examples), "
          f"{available_cpus()} cores; ours goes parallel above {PARALLEL_MIN_PAIRS} new distinct pairs")

    t_ref, ref_scores = best_of(1, lambda: reference_scores(preds, refs))
    ref_overall, ref_tasks = reference_metrics(ref_scores), reference_per_task(ref_scores, tasks)

    results = [("reference (original algorithm)", t_ref)]
    cpus = args.workers or available_cpus()
    modes = [("ours, 1 process", 1), (f"ours, {cpus} processes (forced)", cpus), ("ours, auto", args.workers)]
    for label, workers in modes:
        t, report = best_of(args.repeat, lambda w=workers: fresh_evaluate(preds, refs, tasks, cats, w))
        if report["overall"] != ref_overall or report["per_task"] != ref_tasks:
            print(f"MISMATCH ({label}): {report['overall']} vs {ref_overall}", file=sys.stderr)
            return 1
        results.append((label, t))

    print(f"overall (identical on every side): {ref_overall}")
    print(f"{'scorer':<32}{'seconds':>10}{'pairs/s':>12}{'speed-up':>10}")
    for label, t in results:
        print(f"{label:<32}{t:>10.3f}{n_pairs / t:>12.0f}{t_ref / t:>9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
