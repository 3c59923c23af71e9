"""`python -m evaluation compare A B`: differences of two runs (per task, per category) or two sweeps (per run).

Every overall difference comes with a paired 95% bootstrap interval over the common test tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.bootstrap import paired_diff
from evaluation.metrics import HEADLINE_METRICS
from evaluation.report import score_run
from evaluation.runs import RunInfo, discover
from evaluation.scoring import Scores, group_key
from ni.errors import DataError
from ni.io import write_json


def _scored(path: Path) -> list[tuple[RunInfo, Scores]]:
    out = []
    for run in discover([path]):
        s = score_run(run)
        if s is not None:
            out.append((run, s))
    if not out:
        raise DataError(f"{path}: no run with usable predictions")
    return out


def compare_scores(a: Scores, b: Scores, seed: int = 0) -> dict[str, Any]:
    """Overall (with paired CI), per-category headline and per-task ROUGE-L differences a - b."""
    overall = {}
    for m in ("rougeL", "exact_match"):
        d = paired_diff(a.task_pairs(m), b.task_pairs(m), seed=seed)
        overall[m] = None if d is None else {"diff": d.diff, "ci": [d.low, d.high], "tasks": d.tasks,
                                             "significant": d.significant}
    cats = {}
    for cat, metric in HEADLINE_METRICS.items():
        if cat in a.per_category and cat in b.per_category:
            cats[group_key(metric, cat)] = round(a.per_category[cat][metric] - b.per_category[cat][metric], 4)
    tasks = {}
    for task, figures in a.per_task.items():
        if task in b.per_task:
            tasks[task] = round(figures["rougeL"] - b.per_task[task]["rougeL"], 4)
    return {"overall": overall, "per_category": cats, "per_task": dict(sorted(tasks.items(), key=lambda kv: kv[1]))}


def compare_paths(a: Path, b: Path, seed: int = 0) -> dict[str, Any]:
    ra, rb = _scored(a), _scored(b)
    if len(ra) == 1 and len(rb) == 1:
        return {"a": ra[0][0].name, "b": rb[0][0].name, "kind": "runs", **compare_scores(ra[0][1], rb[0][1], seed)}
    by_name = {r.name: s for r, s in rb}
    runs = {r.name: compare_scores(s, by_name[r.name], seed) for r, s in ra if r.name in by_name}
    if not runs:
        raise DataError(f"{a} and {b}: no run name in common", hint="Compare two runs, or two sweeps of the same runs.")
    return {"a": str(a), "b": str(b), "kind": "sweeps", "runs": runs}


def _fmt(o: dict[str, Any] | None) -> str:
    if o is None:
        return "no common tasks"
    sig = "significant" if o["significant"] else "not significant"
    return f"{o['diff']:+.2f} [95% CI {o['ci'][0]:+.2f}, {o['ci'][1]:+.2f}] over {o['tasks']} tasks ({sig})"


def to_markdown(c: dict[str, Any]) -> str:
    out = [f"# {c['a']} - {c['b']}", ""]
    if c["kind"] == "runs":
        out += [f"- ROUGE-L: {_fmt(c['overall']['rougeL'])}", f"- exact match: {_fmt(c['overall']['exact_match'])}", ""]
        out += ["| category (headline) | diff |", "|---|---|"]
        out += [f"| {k} | {v:+.2f} |" for k, v in c["per_category"].items()]
        out += ["", "| task | ROUGE-L diff |", "|---|---|"]
        out += [f"| {k} | {v:+.2f} |" for k, v in c["per_task"].items()]
    else:
        out += ["| run | ROUGE-L diff | exact match diff |", "|---|---|---|"]
        out += [f"| {n} | {_fmt(r['overall']['rougeL'])} | {_fmt(r['overall']['exact_match'])} |"
                for n, r in c["runs"].items()]
    return "\n".join(out)


def run_compare(a: Path, b: Path, out: Path | None = None, seed: int = 0) -> int:
    c = compare_paths(a, b, seed)
    print(to_markdown(c))
    if out is not None:
        write_json(out, c)
    return 0
