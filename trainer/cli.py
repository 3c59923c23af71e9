"""`python -m trainer ...`: run a config, encode a split, build the tiny CPU model, write the embedded data,
talk to a model (demo), export a run as a model folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ni.cli_util import run_cli
from ni.data import TRACKS, require_split
from ni.encoding import ENCODING_NAMES, PromptEncoder, resolve_encoding
from ni.errors import ConfigError
from ni.io import refuse_overwriting_inputs, write_jsonl
from ni.synthetic import ensure_default_data, generate
from trainer.demo import main_demo
from trainer.fetch import NI_REMOTE, NI_REVISION, fetch_data
from trainer.hf import load_tokenizer
from trainer.tiny import build_tiny_model


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="write the prompts of a split as JSON lines {id, task, source, references}")
    p.add_argument("--data", required=True, help="data root in the NI layout (tasks/, splits/)")
    p.add_argument("--track", default="default", choices=TRACKS)
    p.add_argument("--split", default="test", choices=("train", "dev", "test"))
    p.add_argument("--encoding", required=True, help=f"one of: {', '.join(ENCODING_NAMES)}")
    p.add_argument("--max-instances-per-eval-task", type=int, default=None, help="cap for dev/test tasks")
    p.add_argument("--max-instances-per-task", type=int, default=None, help="cap for train tasks")
    p.add_argument("--max-source-length", type=int, default=None, help="tokens; needs --tokenizer")
    p.add_argument("--tokenizer", default=None, help="Hub name or local path of a fast tokenizer")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True, type=Path)


def cmd_encode(args: argparse.Namespace) -> int:
    if args.max_source_length is not None and args.tokenizer is None:
        raise ConfigError("--max-source-length needs --tokenizer", hint="For example: --tokenizer t5-base.")
    if args.max_source_length is not None and args.max_source_length <= 0:
        raise ConfigError(f"--max-source-length must be positive, got {args.max_source_length}")
    resolve_encoding(args.encoding)  # fail on a bad name before reading any data
    cap = args.max_instances_per_task if args.split == "train" else args.max_instances_per_eval_task
    refuse_overwriting_inputs(args.out, {"--data": args.data})
    data = require_split(args.data, args.track, args.split, max_instances_per_task=cap, seed=args.seed)
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer = load_tokenizer(args.tokenizer)
    encoder = PromptEncoder(args.encoding, tokenizer, args.max_source_length, seed=args.seed)
    pairs = list(data)
    encoded = encoder.encode_many(pairs)
    rows = (
        {"id": inst.id, "task": task.name, "source": enc.source, "references": list(inst.outputs)}
        for (task, inst), enc in zip(pairs, encoded, strict=True)
    )
    n = write_jsonl(args.out, rows)
    truncated = sum(e.truncated for e in encoded)
    print(f"wrote {n} prompts ({len(data.tasks)} tasks, encoding {args.encoding}"
          f"{f', {truncated} truncated' if tokenizer is not None else ''}) to {args.out}")
    return 0


def _add_tiny_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-model", help="build a small random T5 + a tokenizer trained on the data's text")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", default=None, help="data root whose text trains the tokenizer (default: embedded)")
    p.add_argument("--vocab-size", type=int, default=2000)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    data = args.data or ensure_default_data()
    out = build_tiny_model(
        args.out, data, vocab_size=args.vocab_size, d_model=args.d_model, num_layers=args.num_layers, seed=args.seed
    )
    print(f"wrote a tiny T5 and its tokenizer to {out}")
    return 0


def _add_make_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-data", help="write the embedded default dataset (synthetic NI-format tasks)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-instances", type=int, default=200)
    p.add_argument("--overwrite", action="store_true")


def cmd_make_data(args: argparse.Namespace) -> int:
    out = generate(args.out, seed=args.seed, num_instances=args.num_instances, overwrite=args.overwrite)
    print(f"wrote the embedded default dataset to {out}")
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train (if asked), predict the test split, score; one run directory")
    p.add_argument("--config", required=True, help="run config YAML (schema: trainer/config.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted path, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--force", action="store_true", help="run again even if the run directory is completed")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def cmd_run(args: argparse.Namespace) -> int:
    from trainer.run import main_run

    return main_run(args.config, args.overrides, args.force, args.dry_run)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="talk to a model: task definition, examples, input -> its answer")
    p.add_argument("--model", required=True, help="Hub name or local path (e.g. an exported run), or 'tiny'")
    p.add_argument("--encoding", default="instruct_pos_2_input", help=f"one of: {', '.join(ENCODING_NAMES)}")
    p.add_argument("--once", action="store_true",
                   help='read one JSON object {"definition", "positive_examples", "input"} from stdin, '
                        'print {"prompt", "prediction"}')
    p.add_argument("--show-prompt", action="store_true", help="print the prompt before each answer")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-source-length", type=int, default=1024)


def cmd_demo(args: argparse.Namespace) -> int:
    return main_demo(args.model, args.encoding, args.once, args.show_prompt, args.max_new_tokens,
                     args.max_source_length)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a completed run as a save_pretrained folder with a model card")
    p.add_argument("run_dir", help="a completed run directory (runs/<sweep>/<run-id>)")
    p.add_argument("--out", required=True, help="the folder to write (must not exist or be empty)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--push-to-hub", dest="repo", default=None, metavar="REPO",
                   help="then upload it to this Hub repo (token from HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")


def cmd_export(args: argparse.Namespace) -> int:
    from trainer.export import main_export

    refuse_overwriting_inputs(args.out, {"RUN_DIR": args.run_dir})
    return main_export(args.run_dir, args.out, args.force, args.repo, args.private)


def _add_fetch_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch-data", help="Super-NaturalInstructions at a pinned revision, checked (git, shallow)")
    p.add_argument("--out", required=True, type=Path, help="the data root to create (tasks/, splits/)")
    p.add_argument("--revision", default=NI_REVISION, help=f"tag, branch or commit (default {NI_REVISION})")
    p.add_argument("--remote", default=NI_REMOTE, help="the git repository to fetch from")


def cmd_fetch_data(args: argparse.Namespace) -> int:
    got = fetch_data(args.out, args.revision, args.remote)
    splits = ", ".join(f"{k} {v['tasks']}" for k, v in got["splits"].items())
    print(f"{args.out}: {got['revision']} ({got['commit'][:12]}) {'fetched' if got['fetched'] else 'already there'}"
          f" and checked; tasks per split: {splits}")
    return 0


COMMANDS = {"encode": cmd_encode, "fetch-data": cmd_fetch_data, "tiny-model": cmd_tiny_model, "make-data": cmd_make_data, "run": cmd_run,
            "demo": cmd_demo, "export": cmd_export}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_encode(sub)
    _add_tiny_model(sub)
    _add_make_data(sub)
    _add_run(sub)
    _add_demo(sub)
    _add_export(sub)
    _add_fetch_data(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
