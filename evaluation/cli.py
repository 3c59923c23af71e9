"""`python -m evaluation`: heuristic baselines and scoring of prediction files.

    python -m evaluation baseline copy_demo|copy_input --data ROOT --track default|xlingual \
        [--max-instances-per-eval-task N] --out PRED.jsonl
    python -m evaluation score PRED.jsonl [--data ROOT] [--track default|xlingual] \
        [--xlingual-tokenizer PATH_OR_NAME] --out METRICS.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.api_baseline import ApiSettings, write_api_baseline
from evaluation.baselines import BASELINES, write_baseline
from evaluation.metrics import HEADLINE_METRICS, METRICS
from evaluation.scoring import Scores, score_file
from ni.cli_util import run_cli
from ni.data import TRACKS
from ni.errors import ConfigError
from ni.io import refuse_overwriting_inputs, write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("baseline", help="write a heuristic baseline's predictions for a test split")
    b.add_argument("name", choices=[*sorted(BASELINES), "api"])
    b.add_argument("--data", required=True, type=Path, help="NI data root (tasks/, splits/)")
    b.add_argument("--track", choices=TRACKS, default="default")
    b.add_argument("--max-instances-per-eval-task", type=int, default=None, metavar="N")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--base-url", help="api: OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    b.add_argument("--model", help="api: model name")
    b.add_argument("--api-key-env", default="OPENAI_API_KEY", help="api: environment variable holding the key")
    b.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    b.add_argument("--concurrency", type=int, default=4, help="api: requests in flight at most")
    b.add_argument("--max-retries", type=int, default=6, help="api: retries on 429/5xx (exponential backoff)")
    b.add_argument("--cache", type=Path, default=None, help="api: response cache (default: OUT.cache.jsonl)")

    s = sub.add_parser("score", help="score a predictions file (exact match, ROUGE-1, ROUGE-L)")
    s.add_argument("predictions", type=Path)
    s.add_argument("--data", type=Path, default=None, help="NI data root: categories of lines that lack them")
    s.add_argument("--track", choices=TRACKS, default="default")
    s.add_argument("--xlingual-tokenizer", default="gpt2", metavar="PATH_OR_NAME")
    s.add_argument("--workers", type=int, default=None, help="processes for ROUGE (default: all cores when large)")
    s.add_argument("--out", required=True, type=Path)

    r = sub.add_parser("report", help="aggregate every run below RUNS_DIR... into one report (md, html, csv, json)")
    r.add_argument("runs", nargs="+", type=Path, metavar="RUNS_DIR")
    r.add_argument("--out", type=Path, default=None, help="report directory (default: RUNS_DIR/report)")
    r.add_argument("--format", default="md,html,csv,json", help="comma-separated: md,html,csv,json")
    r.add_argument("--strict", action="store_true", help="exit 1 when a run failed, is missing, running or truncated")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    r.add_argument("--no-baselines", action="store_true", help="skip the heuristic baselines on the runs' test data")
    r.add_argument("--replicates", default="seed", metavar="AXES",
                   help="comma-separated varied keys whose values are replicates, aggregated as mean/std/n "
                        "(default: seed; '' for none)")

    c = sub.add_parser("compare", help="per-task and per-category differences of two runs or two sweeps")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON")
    return p


def print_report(scores: Scores) -> None:
    """Overall and per-category figures as a table; each category's headline metric is starred."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{scores.track} track, {scores.num_examples} examples (* = headline metric)")
    table.add_column("group")
    for m in METRICS:
        table.add_column(m, justify="right")

    def row(name: str, values: dict[str, float], mark: str | None) -> None:
        table.add_row(name, *(f"[bold]{values[m]:.4f}*[/bold]" if m == mark else f"{values[m]:.4f}" for m in METRICS))

    row("overall", scores.overall, "rougeL")
    if scores.per_category:
        table.add_section()
    for cat in sorted(scores.per_category):
        row(cat, scores.per_category[cat], HEADLINE_METRICS.get(cat))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    """Run a command; a user error is one line on stderr and exit code 2 (`ni.cli_util.run_cli`)."""
    return run_cli(_dispatch, argv)


def _dispatch(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    inputs = {"report": {f"RUNS_DIR {p}": p for p in getattr(args, "runs", [])},
              "compare": {"A": getattr(args, "a", None), "B": getattr(args, "b", None)},
              "baseline": {"--data": getattr(args, "data", None), "--cache": getattr(args, "cache", None)},
              "score": {"PREDICTIONS": getattr(args, "predictions", None), "--data": getattr(args, "data", None)}}
    refuse_overwriting_inputs(args.out, inputs.get(args.command, {}))
    if args.command == "report":
        from evaluation.report import run_report

        fmts = [f.strip() for f in args.format.split(",") if f.strip()]
        reps = [a.strip() for a in args.replicates.split(",") if a.strip()]
        return run_report(args.runs, args.out, fmts, args.strict, args.seed, not args.no_baselines,
                          replicate_axes=reps)
    if args.command == "compare":
        from evaluation.compare import run_compare

        return run_compare(args.a, args.b, args.out, args.seed)
    if args.command == "baseline" and args.name == "api":
        if not args.base_url or not args.model:
            raise ConfigError("baseline api: --base-url and --model are required")
        settings = ApiSettings(args.base_url, args.model, args.api_key_env, args.endpoint, args.concurrency,
                               args.max_retries)
        n = write_api_baseline(settings, args.data, args.track, args.out, args.cache,
                               args.max_instances_per_eval_task)
        print(f"wrote {n} api predictions ({args.model}) to {args.out}")
        return 0
    if args.command == "baseline":
        n = write_baseline(args.name, args.data, args.track, args.out, args.max_instances_per_eval_task)
        print(f"wrote {n} {args.name} predictions to {args.out}")
        return 0
    scores = score_file(args.predictions, args.data, args.track, args.xlingual_tokenizer, args.workers)
    write_json(args.out, scores.to_json())
    print_report(scores)
    print(f"wrote metrics to {args.out}")
    return 0
