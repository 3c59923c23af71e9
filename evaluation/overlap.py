"""ROUGE-1 and ROUGE-L F-measures on token-id sequences, bit-identical to rouge-score 0.1.2.

rouge-score computes, for a target and a prediction token list,

* ROUGE-1: unigram counts intersected (`min` per token); P = inter / max(n_pred, 1), R = inter / max(n_target, 1);
* ROUGE-L: 0 when either side is empty, else P = lcs / n_pred, R = lcs / n_target;

and F = 2PR / (P + R) (0 when P + R is 0). The integers (intersection, LCS length) are exact whichever way
they are computed, and the float operations below are the same, in the same order, so the floats are identical.
The LCS length uses the bit-parallel algorithm of Hyyrö (2004) on Python integers instead of a DP table.

This module imports nothing heavy: worker processes of `score_pairs` only need it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Sequence

Seq = tuple[int, ...]

# Below this many distinct (prediction, reference) pairs a process pool costs more than it saves.
PARALLEL_MIN_PAIRS = 20_000
_CHUNK = 2_000


def fmeasure(precision: float, recall: float) -> float:
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence (bit-parallel; the bit vector runs over the longer side)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[int, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m is not None:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge1_f(target: Counter[int], n_target: int, pred: Counter[int], n_pred: int) -> float:
    if len(pred) < len(target):
        inter = sum(min(c, target[t]) for t, c in pred.items() if t in target)
    else:
        inter = sum(min(c, pred[t]) for t, c in target.items() if t in pred)
    return fmeasure(inter / max(n_pred, 1), inter / max(n_target, 1))


def rougel_f(target: Sequence[int], pred: Sequence[int]) -> float:
    if not target or not pred:
        return 0.0
    lcs = lcs_length(target, pred)
    return fmeasure(lcs / len(pred), lcs / len(target))


def _score_chunk(seqs: Sequence[Seq], pairs: Sequence[tuple[int, int]]) -> list[tuple[float, float]]:
    """(ROUGE-1 F, ROUGE-L F) of each (prediction index, target index) pair of `seqs`."""
    counts: dict[int, Counter[int]] = {}

    def count(i: int) -> Counter[int]:
        c = counts.get(i)
        if c is None:
            c = counts[i] = Counter(seqs[i])
        return c

    out = []
    for p, t in pairs:
        pred, target = seqs[p], seqs[t]
        out.append((rouge1_f(count(t), len(target), count(p), len(pred)), rougel_f(target, pred)))
    return out


_worker_seqs: Sequence[Seq] = ()


def _init_worker(seqs: Sequence[Seq]) -> None:
    global _worker_seqs
    _worker_seqs = seqs


def _score_chunk_in_worker(pairs: Sequence[tuple[int, int]]) -> list[tuple[float, float]]:
    return _score_chunk(_worker_seqs, pairs)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def score_pairs(
    seqs: Sequence[Seq], pairs: Sequence[tuple[int, int]], workers: int | None = None
) -> list[tuple[float, float]]:
    """(ROUGE-1 F, ROUGE-L F) for each (prediction index, target index) pair, in order.

    `workers=None` uses every available core once there are more than PARALLEL_MIN_PAIRS pairs, else one process.
    """
    if workers is None:
        workers = available_cpus() if len(pairs) > PARALLEL_MIN_PAIRS else 1
    workers = min(workers, max(1, len(pairs) // _CHUNK))
    if workers <= 1:
        return _score_chunk(seqs, pairs)
    # Only the sequences the pairs use travel to the workers.
    used = sorted({i for pair in pairs for i in pair})
    local = {g: k for k, g in enumerate(used)}
    sub = [seqs[g] for g in used]
    local_pairs = [(local[p], local[t]) for p, t in pairs]
    chunks = [local_pairs[i : i + _CHUNK] for i in range(0, len(local_pairs), _CHUNK)]
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(sub,)) as pool:
        results = pool.map(_score_chunk_in_worker, chunks)
    return [r for chunk in results for r in chunk]
