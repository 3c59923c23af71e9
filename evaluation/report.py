"""`python -m evaluation report RUNS_DIR...`: one report over every run below the given paths.

Builds a JSON-able report object (rows, pivots, per-task table, intervals, reference rows) that the renderers in
`evaluation.report_render` turn into Markdown, CSV, JSON and a self-contained HTML page with plots.
Runs that failed, are missing, still running or have a truncated predictions file are shown and flagged.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from evaluation.baselines import BASELINES, baseline_rows
from evaluation.bootstrap import task_interval
from evaluation.categories import TaskCategories
from evaluation.metrics import HEADLINE_METRICS, METRICS
from evaluation.predictions import parse_line, read_predictions_file
from evaluation.report_groups import (
    REPLICATE_AXES,
    best_worst,
    build_groups,
    is_ni_test_split,
    split_axes,
    versus,
)
from evaluation.report_render import FORMATS, to_markdown, write_report
from evaluation.rouge import available_cpus, shared_scorer
from evaluation.runs import RunInfo, _is_run_dir, config_differences, discover
from evaluation.scorecache import cache_key, file_sha256, load_cached, store_cached
from evaluation.scoring import Scores, flatten, group_key, groups_of, score_predictions
from ni.errors import DataError, TkError
from ni.io import write_json
from ni.synthetic import ensure_default_data

# reference.md section 7: ROUGE-L on the 119 English / 35 cross-lingual test tasks (repository README).
PUBLISHED: list[tuple[str, float | None, float | None]] = [
    ("Copying instance input", 14.20, 5.44),
    ("Copying demo output", 28.54, 50.31),
    ("T5-LM 11B", 30.16, None),
    ("GPT-3 175B", 45.05, 51.20),
    ("T0 11B", 32.28, None),
    ("GPT-3 Instruct 175B", 52.06, 53.74),
    ("Tk-Instruct 3B (def + 2 pos)", 54.33, None),
    ("Tk-Instruct 11B", 60.07, None),
    ("mTk-Instruct 3B", None, 56.72),
]
OK_STATES = ("completed",)
ENCODING_AXES = ("data.train_encoding", "data.test_encoding")


def _task_categories(run: RunInfo) -> Any:
    root = run.data_setting("root")
    if root is None and run.config:
        return TaskCategories(ensure_default_data())
    return TaskCategories(Path(root) if root else None)


def score_run(
    run: RunInfo, xlingual_tokenizer: Any = "gpt2", use_cache: bool = True, workers: int | None = None
) -> Scores | None:
    """The run's scores (cached by content hash), or None when it has no predictions; problems become flags."""
    file = run.predictions
    if not file.is_file():
        if run.state == "completed":
            run.flags.append("completed without predictions")
        return None
    track = str(run.data_setting("track", "default"))
    key = cache_key(file_sha256(file), track)
    scores = load_cached(run.path, key) if use_cache else None
    if scores is None:
        try:
            read = read_predictions_file(file, lenient=True)
            preds = read.predictions
            if all(p.category is not None for p in preds):
                categories = [str(p.category) for p in preds]
            else:
                cats = _task_categories(run)
                categories = [cats(p, file) for p in preds]
            scores = score_predictions(preds, categories, track, xlingual_tokenizer, workers)
        except TkError as e:
            run.flags.append(f"predictions unusable: {e}")
            return None
        scores.truncated = read.truncated
        if use_cache:
            store_cached(run.path, key, scores)
    return _flag_truncated(run, scores)


def _flag_truncated(run: RunInfo, scores: Scores) -> Scores:
    if scores.truncated:
        run.flags.append("predictions truncated mid-line (last line left out)")
    return scores


def _cached_scores(run: RunInfo) -> Scores | None:
    key = cache_key(file_sha256(run.predictions), str(run.data_setting("track", "default")))
    return load_cached(run.path, key)


_pool_job: tuple[Any, bool] = ("gpt2", True)


def _score_in_worker(run: RunInfo) -> tuple[Scores | None, list[str]]:
    scores = score_run(run, _pool_job[0], _pool_job[1], workers=1)
    return scores, run.flags


def score_runs(
    runs: Sequence[RunInfo], xlingual_tokenizer: Any = "gpt2", use_cache: bool = True, workers: int | None = None
) -> dict[str, Scores | None]:
    """`score_run` of every run. The runs to score (no cached scores) are scored one per process across
    `workers` processes (default: every available core) when there are two or more, each process keeping its
    scorer for the next file of the same test set; cached scores are read here."""
    global _pool_job
    out: dict[str, Scores | None] = {}
    pending = []
    for r in runs:
        if not r.predictions.is_file():
            continue
        cached = _cached_scores(r) if use_cache else None
        if cached is None:
            pending.append(r)
        else:  # read (and hashed) once, here
            out[r.name] = _flag_truncated(r, cached)
    workers = min(workers or available_cpus(), len(pending))
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        _pool_job = (xlingual_tokenizer, use_cache)  # inherited by the forked workers, never pickled
        for track in sorted({str(r.data_setting("track", "default")) for r in pending}):
            with contextlib.suppress(TkError):  # a tokenizer that cannot load: each run is flagged as before
                shared_scorer(track, xlingual_tokenizer).tokenizer.tokenize("")  # loaded once, before the fork
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for run, (scores, flags) in zip(pending, pool.imap(_score_in_worker, pending), strict=True):
                out[run.name], run.flags[:] = scores, flags
    return {r.name: out[r.name] if r.name in out else score_run(r, xlingual_tokenizer, use_cache) for r in runs}


def _intervals(scores: Scores, seed: int) -> dict[str, list[float] | None]:
    stats = scores.tasks
    out: dict[str, list[float] | None] = {}
    for m in ("rougeL", "exact_match"):
        ci = task_interval([s.sums[m] for s in stats.values()], [s.n for s in stats.values()], seed=seed)
        out[m] = ci.as_list() if ci else None
    for cat, metric in HEADLINE_METRICS.items():
        members = [s for s in stats.values() if s.category == cat]
        if members:
            ci = task_interval([s.sums[metric] for s in members], [s.n for s in members], seed=seed)
            out[group_key(metric, cat)] = ci.as_list() if ci else None
    return out


def _row(run: RunInfo, varied: dict[str, Any], scores: Scores | None, seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run": run.name,
        "path": str(run.path),
        "varied": varied,
        "state": run.state,
        "flags": list(run.flags),
        "ok": run.state in OK_STATES and not run.flags and scores is not None,
        "wall_seconds": run.wall_seconds,
        "last_attempt_seconds": run.last_attempt_seconds,
        "gpu_hours": run.gpu_hours,
        "track": run.data_setting("track", scores.track if scores else "default"),
    }
    if scores is not None:
        per_task = scores.per_task_metric("rougeL")
        row.update(
            rougeL=scores.overall["rougeL"],
            exact_match=scores.overall["exact_match"],
            rouge1=scores.overall["rouge1"],
            num_examples=scores.num_examples,
            headline=flatten(scores.headline()),
            per_category=flatten(scores.per_category),
            per_task=per_task,
            ci=_intervals(scores, seed),
            best_worst=best_worst(per_task),
        )
    return row


def _pivots(groups: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """2-D pivots (the encoding matrix, or any two-axis sweep) and 1-D curves over a single numeric axis, of the
    configurations' means over replicates (`axes` are the configuration axes, replicate axes left out)."""
    scored = [g for g in groups if g.get("rougeL") is not None and g["varied"]]
    out: list[dict[str, Any]] = []
    if all(a in axes for a in ENCODING_AXES):
        pair: list[str] | None = list(ENCODING_AXES)
    elif len(axes) == 2:
        pair = axes
    else:
        pair = None
    if pair is not None:
        rk, ck = pair
        rvals = list(dict.fromkeys(g["varied"].get(rk) for g in scored))
        cvals = list(dict.fromkeys(g["varied"].get(ck) for g in scored))
        cells = {(str(g["varied"].get(rk)), str(g["varied"].get(ck))): g for g in scored}
        grid = [[cells.get((str(a), str(b))) for b in cvals] for a in rvals]
        out.append({"kind": "matrix", "rows_axis": rk, "cols_axis": ck, "rows": [str(v) for v in rvals],
                    "cols": [str(v) for v in cvals], "metric": "rougeL",
                    "values": [[g["rougeL"] if g else None for g in row] for row in grid],
                    "std": [[g["rougeL_std"] if g else None for g in row] for row in grid],
                    "n": [[g["n"] if g else 0 for g in row] for row in grid]})
    for ax in axes:
        vals = [g["varied"].get(ax) for g in scored]
        if len(axes) > 1 or not vals or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            continue
        points = sorted(scored, key=lambda g: g["varied"][ax])
        out.append({"kind": "curve", "axis": ax, "x": [g["varied"][ax] for g in points],
                    "y": [g["rougeL"] for g in points], "std": [g["rougeL_std"] for g in points],
                    "n": [g["n"] for g in points], "metric": "rougeL"})
    return out


def _baseline_scores(roots: set[tuple[str, str, int | None]], cache_dir: Path | None) -> list[dict[str, Any]]:
    """Heuristic baselines on the same test data as the runs (cached in the report directory)."""
    cache_file = cache_dir / ".baselines-cache.json" if cache_dir else None
    cache: dict[str, Any] = {}
    if cache_file and cache_file.is_file():
        try:
            cache = orjson.loads(cache_file.read_bytes())
        except orjson.JSONDecodeError:
            cache = {}
    out: list[dict[str, Any]] = []
    for root, track, cap in sorted(roots, key=repr):
        for name in sorted(BASELINES):
            try:
                rows = list(baseline_rows(name, root, track, cap))
            except TkError as e:
                out.append({"name": name, "data": root, "track": track, "cap": cap, "error": str(e)})
                continue
            blob = orjson.dumps([[r["Task"], r["prediction"], r["Instance"]["output"], r["Categories"]] for r in rows])
            key = cache_key(hashlib.sha256(blob).hexdigest(), track, name)
            s = Scores.from_cache(cache.get(key))
            if s is None:
                preds = [parse_line(Path(f"<{name}>"), i, r) for i, r in enumerate(rows, 1)]
                s = score_predictions(preds, [p.category or "" for p in preds], track)
                cache[key] = s.to_cache()
            out.append({"name": name, "data": root, "track": track, "cap": cap, "rougeL": s.overall["rougeL"],
                        "exact_match": s.overall["exact_match"], "headline": flatten(s.headline()),
                        "num_examples": s.num_examples, "task_stats": s.task_pairs("rougeL")})
    if cache_file is not None:
        write_json(cache_file, cache)
    return out


def _test_data(run: RunInfo) -> tuple[str, str, int | None] | None:
    """(data root, track, instances per test task) a run was tested on; the embedded default data when its config
    names no root. None for a directory without a config (e.g. predictions written by hand)."""
    if not run.config:
        return None
    root = run.data_setting("root")
    if root is None:
        root = str(ensure_default_data())
    return str(root), str(run.data_setting("track", "default")), run.data_setting("max_instances_per_eval_task")


def _data_summary(runs: list[RunInfo], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the runs were tested on: per data root and track, the test tasks and instances the runs scored."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for run, row in zip(runs, rows, strict=True):
        data = _test_data(run)
        root, track = (data[0], data[1]) if data else ("(unknown: no config.yaml)", str(row["track"]))
        entry = out.setdefault((root, track), {"root": root, "track": track, "tasks": set(), "instances": set(),
                                               "embedded": bool(run.config) and run.data_setting("root") is None})
        entry["tasks"].update(row.get("per_task") or {})
        if row.get("num_examples"):
            entry["instances"].add(row["num_examples"])
    return [{**e, "tasks": len(e["tasks"]), "task_names": sorted(e["tasks"]), "instances": sorted(e["instances"]),
             "ni_test_split": is_ni_test_split(e["tasks"], e["track"])} for e in out.values()]


def build_report(
    paths: Sequence[Path],
    seed: int = 0,
    baselines: bool = True,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    xlingual_tokenizer: Any = "gpt2",
    replicate_axes: Sequence[str] = REPLICATE_AXES,
) -> dict[str, Any]:
    t0 = time.time()
    runs = discover([Path(p) for p in paths])
    if not runs:
        raise DataError(f"{', '.join(map(str, paths))}: no run directories found (config.yaml, status.json, "
                        "predicted_examples.jsonl or DONE)")
    diffs = config_differences(runs)
    scores = score_runs(runs, xlingual_tokenizer, use_cache)
    rows = []
    for r in runs:
        varied = r.varied if r.varied is not None else diffs.get(r.name, {})
        rows.append(_row(r, varied, scores[r.name], seed))
    axes: list[str] = []
    for row in rows:
        axes += [k for k in row["varied"] if k not in axes]
    config_axes, rep_axes = split_axes(axes, replicate_axes)
    groups = build_groups(rows, {n: s.tasks if s else None for n, s in scores.items()}, config_axes,
                          rep_axes, seed)
    categories = sorted({g for row in rows for g in groups_of(row.get("headline", {}))})
    tasks = sorted({t for row in rows for t in row.get("per_task", {})})
    ranked = sorted((g for g in groups if g["rougeL"] is not None), key=lambda g: -g["rougeL"])
    comparison = None
    if len(ranked) >= 2:
        a, b = ranked[0], ranked[1]
        d = versus(a, b["task_stats"], seed)
        if d is not None:
            comparison = {"a": a["name"], "b": b["name"], "metric": "rougeL", **d}
    data = _data_summary(runs, rows)
    tested = {t for r in runs if (t := _test_data(r)) is not None}
    refs = _baseline_scores(tested, cache_dir) if baselines else []
    group_data = {g["name"]: {_test_data(r) for r in runs if r.name in g["runs"]} for g in groups}
    for g in groups:
        g["vs_baselines"] = {
            b["name"]: versus(g, b["task_stats"], seed)
            for b in refs if "task_stats" in b and (b["data"], b["track"], b["cap"]) in group_data[g["name"]]
        }
    tracks = sorted({d["track"] for d in data if d["ni_test_split"]})
    published = [
        {"name": n, "track": t, "rougeL": v, "source": "published (reference.md §7)"}
        for n, en, xl in PUBLISHED
        for t, v in (("default", en), ("xlingual", xl))
        if v is not None and t in tracks
    ]
    for g in groups:
        g["task_stats"] = {t: list(v) for t, v in g["task_stats"].items()}
    for b in refs:
        b.pop("task_stats", None)
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "paths": [str(p) for p in paths],
        "seed": seed,
        "axes": axes,
        "config_axes": config_axes,
        "replicate_axes": rep_axes,
        "data": data,
        "categories": categories,
        "headline_metric": {c: HEADLINE_METRICS[c] for c in categories if c in HEADLINE_METRICS},
        "rows": rows,
        "groups": groups,
        "tasks": tasks,
        "pivots": _pivots(groups, config_axes),
        "comparison": comparison,
        "baselines": refs,
        "published": published,
        "problems": [{"run": r["run"], "state": r["state"], "flags": r["flags"]} for r in rows if not r["ok"]],
        "seconds": round(time.time() - t0, 3),
        "metrics": list(METRICS),
    }


def run_report(
    paths: Sequence[Path],
    out: Path | None = None,
    formats: Sequence[str] = ("md", "html", "csv", "json"),
    strict: bool = False,
    seed: int = 0,
    baselines: bool = True,
    echo: bool = True,
    replicate_axes: Sequence[str] = REPLICATE_AXES,
) -> int:
    """Build, write and print a report; the exit status is 1 under `strict` when a run needs attention."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise DataError(f"--format: unknown format '{bad[0]}'", hint=f"Valid formats: {','.join(FORMATS)}.")
    first = Path(paths[0])
    out = out if out is not None else (first.parent if _is_run_dir(first) else first) / "report"
    report = build_report(paths, seed=seed, baselines=baselines, cache_dir=out, replicate_axes=replicate_axes)
    written = write_report(report, out, list(formats))
    if echo:
        print(to_markdown(report))
        print(f"\nwrote {', '.join(str(w) for w in written)}")
    if report["problems"]:
        print(f"{len(report['problems'])} run(s) need attention: "
              + ", ".join(f"{p['run']} ({p['state']})" for p in report["problems"]))
        if strict:
            return 1
    return 0
