"""ROUGE-1 and ROUGE-L F-measures on token-id sequences, bit-identical to rouge-score 0.1.2.

rouge-score computes, for a target and a prediction token list,

* ROUGE-1: unigram counts intersected (`min` per token); P = inter / max(n_pred, 1), R = inter / max(n_target, 1);
* ROUGE-L: 0 when either side is empty, else P = lcs / n_pred, R = lcs / n_target;

and F = 2PR / (P + R) (0 when P + R is 0). The integers (intersection, LCS length) are exact whichever way
they are computed, and the float operations below are the same, in the same order, so the floats are identical.
The LCS length uses the bit-parallel algorithm of Hyyrö (2004) on Python integers instead of a DP table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

Seq = tuple[int, ...]


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
    return lcs_length_masked(lcs_masks(a), len(a), b)


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


def lcs_masks(a: Sequence[int]) -> dict[int, int]:
    """Bit i of masks[t] is set where a[i] == t: `lcs_length_masked`'s view of `a`."""
    masks: dict[int, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def lcs_length_masked(masks: dict[int, int], n: int, b: Sequence[int]) -> int:
    """`lcs_length(a, b)` from `lcs_masks(a)` and n = len(a) (LCS length is symmetric: any side can be `a`)."""
    full = (1 << n) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m is not None:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


class PairCaches:
    """Per-target precomputations kept across calls (references recur): {target index: (LCS masks, token counts)}."""

    def __init__(self) -> None:
        self.targets: dict[int, tuple[dict[int, int], dict[int, int]]] = {}


def score_pairs(
    seqs: Sequence[Seq], pairs: Sequence[tuple[int, int]], caches: PairCaches | None = None
) -> list[tuple[float, float]]:
    """(ROUGE-1 F, ROUGE-L F) of each (prediction index, target index) pair of `seqs`, in order.

    `rouge1_f` and `rougel_f` in one pass over the prediction: for each of its tokens found in the target, one
    step of `lcs_length_masked` and one unigram match while the target has copies of the token left. Same integers,
    same float operations in the same order."""
    targets = (caches or PairCaches()).targets
    out = []
    for p, t in pairs:
        pred, target = seqs[p], seqs[t]
        if not pred or not target or pred == target:  # F is 0 with an empty side, exactly 1 for equal sequences
            out.append((1.0, 1.0) if pred and pred == target else (0.0, 0.0))
            continue
        cached = targets.get(t)
        if cached is None:
            cached = targets[t] = (lcs_masks(target), dict(Counter(target)))
        masks, left = cached[0], cached[1].copy()
        n = len(target)
        full = (1 << n) - 1
        v = full
        inter = 0
        for tok in pred:
            m = masks.get(tok)
            if m is not None:
                u = v & m
                v = ((v + u) | (v - u)) & full
                c = left[tok]
                if c:
                    inter += 1
                    left[tok] = c - 1
        lcs = n - v.bit_count()
        n_pred = len(pred)
        p1, r1, pl, rl = inter / n_pred, inter / n, lcs / n_pred, lcs / n  # fmeasure's expression, inlined
        out.append((2 * p1 * r1 / (p1 + r1) if p1 + r1 > 0 else 0.0, 2 * pl * rl / (pl + rl) if pl + rl > 0 else 0.0))
    return out
