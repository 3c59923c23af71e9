"""Replicates in a report: runs that differ only in a replicate axis (`seed`, or any axis the sweep marks as one)
are one configuration, shown as mean, standard deviation and number of replicates, with a bootstrap interval
over test tasks whose per-task figures pool every replicate's instances.

Also what the runs were tested on, the heuristic baselines compared task by task with each configuration, and
whether the runs' test set is the real NI test split (the only case where the paper's numbers are comparable).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from evaluation.bootstrap import paired_diff, task_interval
from evaluation.scoring import TaskStat

REPLICATE_AXES = ("seed",)
# The size of the real NI test splits (reference.md section 7): 119 English, 35 cross-lingual tasks.
NI_TEST_TASKS = {"default": 119, "xlingual": 35}
_NI_TASK_NAME = re.compile(r"task\d+_[a-z0-9_\-]+", re.IGNORECASE)

TaskStats = dict[str, tuple[float, int]]  # {task: (sum of a metric over its instances, instances)}


def split_axes(axes: Sequence[str], replicate_axes: Iterable[str] = REPLICATE_AXES) -> tuple[list[str], list[str]]:
    """(axes that define a configuration, axes whose values are replicates), each in `axes` order."""
    reps = set(replicate_axes)
    return [a for a in axes if a not in reps], [a for a in axes if a in reps]


def _short(key: str) -> str:
    return key.split(".")[-1]


def group_name(values: dict[str, Any]) -> str:
    return ", ".join(f"{_short(k)}={v}" for k, v in values.items()) or "all runs"


def pool(stats: Sequence[Mapping[str, TaskStat]], metric: str = "rougeL") -> TaskStats:
    """Per-task (sum, count) of `metric` over every replicate's instances."""
    out: dict[str, list[float]] = {}
    for s in stats:
        for task, st in s.items():
            acc = out.setdefault(task, [0.0, 0])
            acc[0] += st.sums[metric]
            acc[1] += st.n
    return {t: (v[0], int(v[1])) for t, v in out.items()}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = round(statistics.fmean(values), 4)
    return mean, (round(statistics.stdev(values), 4) if len(values) > 1 else None)


def best_worst(per_task: dict[str, float], k: int = 3) -> dict[str, list[list[Any]]]:
    """The k best and k worst tasks, never the same task in both: min(k, n // 2) each."""
    ranked = sorted(per_task.items(), key=lambda tv: (tv[1], tv[0]))
    m = min(k, len(ranked) // 2)
    return {"best": [list(x) for x in ranked[::-1][:m]], "worst": [list(x) for x in ranked[:m]]}


def _interval(stats: TaskStats, seed: int) -> list[float] | None:
    ci = task_interval([s for s, _ in stats.values()], [n for _, n in stats.values()], seed=seed)
    return ci.as_list() if ci else None


def build_groups(
    rows: list[dict[str, Any]],
    task_stats: Mapping[str, Mapping[str, TaskStat] | None],
    config_axes: list[str],
    replicate_axes: list[str],
    seed: int,
) -> list[dict[str, Any]]:
    """One entry per configuration (the values of `config_axes`), in the order the rows first show it."""
    members: dict[str, list[dict[str, Any]]] = {}
    keys: dict[str, dict[str, Any]] = {}
    for r in rows:
        values = {a: r["varied"].get(a) for a in config_axes}
        name = group_name(values)
        members.setdefault(name, []).append(r)
        keys[name] = values
    out = []
    for name, group in members.items():
        scored = [r for r in group if r.get("rougeL") is not None]
        stats = [s for r in scored if (s := task_stats.get(r["run"])) is not None]
        pooled = {m: pool(stats, m) for m in ("rougeL", "exact_match")}
        rl, rl_std = _mean_std([r["rougeL"] for r in scored])
        em, em_std = _mean_std([r["exact_match"] for r in scored])
        tasks = sorted({t for r in scored for t in r.get("per_task", {})})
        per_task = {t: round(statistics.fmean(v), 4) for t in tasks
                    if (v := [r["per_task"][t] for r in scored if t in r["per_task"]])}
        heads = sorted({k for r in scored for k in r.get("headline", {})})
        head_values = {k: [r["headline"][k] for r in scored if k in r["headline"]] for k in heads}
        headline = {k: round(statistics.fmean(v), 4) for k, v in head_values.items() if v}
        headline_std = {k: round(statistics.stdev(v), 4) for k, v in head_values.items() if len(v) > 1}
        walls = [w for r in group if (w := r.get("wall_seconds")) is not None]
        gpu = [g for r in group if (g := r.get("gpu_hours")) is not None]
        out.append({
            "name": name,
            "varied": keys[name],
            "runs": [r["run"] for r in group],
            "replicates": [{a: r["varied"].get(a) for a in replicate_axes} for r in scored],
            "n": len(scored),
            "n_runs": len(group),
            "ok": all(r["ok"] for r in group),
            "states": sorted({r["state"] for r in group}),
            "rougeL": rl, "rougeL_std": rl_std, "exact_match": em, "exact_match_std": em_std,
            "num_examples": sum(r.get("num_examples") or 0 for r in scored),
            "ci": {m: _interval(pooled[m], seed) for m in pooled} if stats else {},
            "per_task": per_task,
            "headline": headline,
            "headline_std": headline_std,
            "best_worst": best_worst(per_task),
            "wall_seconds": round(statistics.fmean(walls), 1) if walls else None,
            "gpu_hours": round(sum(gpu), 3) if gpu else None,
            "task_stats": pooled["rougeL"],
        })
    return out


def versus(group: dict[str, Any], reference: TaskStats, seed: int) -> dict[str, Any] | None:
    """The configuration minus a reference on their common tasks, with a paired task bootstrap."""
    d = paired_diff(group["task_stats"], reference, seed=seed)
    if d is None:
        return None
    return {"diff": d.diff, "ci": [d.low, d.high], "tasks": d.tasks, "significant": d.significant}


def is_ni_test_split(tasks: Iterable[str], track: str) -> bool:
    """Whether `tasks` look like the whole real NI test split of `track`: as many tasks as it has, all named the
    NI way (taskNNN_...), none of them generated here."""
    names = set(tasks)
    want = NI_TEST_TASKS.get(track)
    return (want is not None and len(names) == want
            and all(_NI_TASK_NAME.fullmatch(n) and "_synthetic_" not in n for n in names))


def format_seconds(seconds: float | None) -> str:
    """A duration in the unit that reads best: 42 s, 3.5 min, 2.25 h."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
