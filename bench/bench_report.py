"""Report benchmark: 50 runs x 12,000 predictions (120 tasks x 100 instances, synthetic but realistic text).

    python bench/bench_report.py [--runs 50] [--tasks 120] [--instances 100] [--keep DIR] [--no-old]

Times `python -m evaluation report` end to end (scoring every run, all four formats, plots) and again with the
per-run score cache warm. Targets: < 30 s end to end and a cold report under 0.3 s per run on 2 cores; the
cached re-report near-instant.

In the same run, the old scoring path (each run scored in turn by a new scorer with rouge-score's tokenizer, nothing
shared between runs) reports the same sweep cold; both reports must be identical but for their timestamps.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 -- puts this checkout on sys.path
import orjson

from evaluation import bootstrap, metrics, report, rouge, scoring
from evaluation.metrics import HEADLINE_METRICS
from evaluation.report import build_report, run_report

WORDS = ["the", "a", "of", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "this", "which", "answer", "question", "title", "yes", "no", "true", "false", "red", "blue", "green", "cat", "dog", "house", "city", "river", "water", "fire", "sentence", "review", "positive", "negative", "neutral", "event", "person", "place", "time", "reason", "because", "therefore", "however", "summary", "translate", "english", "paper", "model", "data"]
ENCODINGS = ["instruct_input", "pos_2_input", "instruct_pos_2_input", "instruct_pos_2_neg_2_input",
             "instruct_pos_2_neg_2_explanation_input"]


def text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_sweep(root: Path, runs: int, tasks: int, instances: int) -> Path:
    sweep = root / "bench-sweep"
    rng = random.Random(0)
    cats = [c.replace("_", " ").title() for c in HEADLINE_METRICS] + ["Question Answering", "Sentiment Analysis"]
    task_refs = [[[text(rng, 1, 12) for _ in range(rng.randint(1, 3))] for _ in range(instances)] for _ in range(tasks)]
    manifest = {"sweep": "bench-sweep", "runs": {}}
    for r in range(runs):
        run_id = f"run-{r:03d}"
        d = sweep / run_id
        d.mkdir(parents=True)
        skill = 0.2 + 0.6 * r / max(1, runs - 1)
        lines = []
        for t in range(tasks):
            for i in range(instances):
                refs = task_refs[t][i]
                pred = refs[0] if rng.random() < skill * 0.5 else (
                    " ".join(w if rng.random() < skill else rng.choice(WORDS) for w in refs[0].split()))
                lines.append(orjson.dumps({
                    "id": f"task{t:04d}-{i}", "Task": f"task{t:04d}_bench", "Categories": [cats[t % len(cats)]],
                    "Definition": ["Do the thing."], "Instance": {"id": f"task{t:04d}-{i}", "input": text(rng, 5, 30),
                                                                  "output": refs},
                    "prediction": pred}))
        (d / "predicted_examples.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        (d / "status.json").write_bytes(orjson.dumps({"state": "completed", "wall_seconds": 3600.0 + r,
                                                      "world_size": 8}))
        (d / "DONE").write_text("done\n")
        manifest["runs"][run_id] = {"varied": {"data.train_encoding": ENCODINGS[r % 5] + ("" if r < 25 else "+mix"),
                                               "data.test_encoding": ENCODINGS[(r // 5) % 5]}}
    (sweep / "manifest.json").write_bytes(orjson.dumps(manifest))
    return sweep


class RougeScoreTokenizer:
    """The old default-track tokenizer: rouge-score's own `tokenize` with a memoized Porter stemmer."""

    def __init__(self) -> None:
        from rouge_score import tokenize

        self._tokenize = tokenize.tokenize
        self._stemmer = rouge.CachingStemmer()

    def tokenize(self, text: str) -> list[str]:
        return list(self._tokenize(text, self._stemmer))


def old_report(sweep: Path) -> dict[str, Any]:
    """The sweep's report (no cache) scored the old way: one run after another, a new scorer for each."""
    saved = report.score_runs, scoring.shared_scorer

    def one_by_one(runs: Any, tok: Any = "gpt2", use_cache: bool = True) -> dict[str, Any]:
        return {r.name: report.score_run(r, tok, use_cache) for r in runs}

    report.score_runs = one_by_one  # type: ignore[assignment]
    scoring.shared_scorer = lambda track, tok=None: rouge.RougeScorer(  # type: ignore[assignment]
        RougeScoreTokenizer() if track == "default" else rouge.make_tokenizer(track, tok))
    try:
        return build_report([sweep], use_cache=False, cache_dir=sweep / "report-old")
    finally:
        report.score_runs, scoring.shared_scorer = saved  # type: ignore[assignment]


def cpu() -> float:
    """CPU seconds of this process and its finished children (the scoring workers): on a shared machine wall
    time measures the neighbours."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def comparable(rep: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in rep.items() if k not in ("generated_at", "seconds")})


def clear_caches(sweep: Path) -> None:
    for f in sweep.glob("*/.report-cache.json"):
        f.unlink()
    rouge._shared.clear()
    metrics._normalized.clear()
    bootstrap._indices.cache_clear()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--tasks", type=int, default=120)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--keep", type=Path, default=None, help="build the sweep here and keep it")
    ap.add_argument("--no-old", action="store_true", help="skip the old scoring path")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = time.perf_counter()
        sweep = make_sweep(root, args.runs, args.tasks, args.instances)
        print(f"built {args.runs} runs x {args.tasks * args.instances} predictions in {time.perf_counter() - t0:.1f} s")
        timings: list[float] = []
        cold_cpu = 0.0
        for label in ("cold (scores every run)", "cached re-report"):
            t0, c0 = time.perf_counter(), cpu()
            rc = run_report([sweep], sweep / "report", echo=False)
            timings.append(time.perf_counter() - t0)
            cold_cpu = cold_cpu if timings[1:] else cpu() - c0
            assert rc == 0
            print(f"{label}: {timings[-1]:.2f} s ({timings[-1] / args.runs:.3f} s per run; CPU "
                  f"{(cpu() - c0) / args.runs:.3f} s per run over all processes)")
        cores = rouge.available_cpus()
        print(f"target < 30 s end to end: {'OK' if timings[0] < 30 else 'MISSED'}; "
              f"cold < 0.3 s per run: {'OK' if timings[0] / args.runs < 0.3 else 'MISSED'} (wall; cold CPU per run / "
              f"{cores} cores = {cold_cpu / args.runs / cores:.3f} s, the wall time idle cores would need at best)")
        if not args.no_old:
            clear_caches(sweep)
            t0, c0 = time.perf_counter(), cpu()
            new = build_report([sweep], use_cache=False, cache_dir=sweep / "report-new")
            t_new, c_new = time.perf_counter() - t0, cpu() - c0
            clear_caches(sweep)
            t0, c0 = time.perf_counter(), cpu()
            old = old_report(sweep)
            t_old, c_old = time.perf_counter() - t0, cpu() - c0
            if comparable(new) != comparable(old):
                print("MISMATCH: the old and the new scoring give different reports", file=sys.stderr)
                return 1
            n = args.runs
            print(f"report data without files, cold, per run: new {t_new / n:.3f} s ({c_new / n:.3f} CPU s), old "
                  f"(one by one, nothing shared) {t_old / n:.3f} s ({c_old / n:.3f} CPU s): {t_old / t_new:.1f}x "
                  f"the wall time, {c_old / c_new:.1f}x the CPU; identical reports")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
