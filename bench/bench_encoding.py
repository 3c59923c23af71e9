"""Encoding throughput: ours (each piece tokenized once) vs the original algorithm (re-tokenize per candidate).

    python bench/bench_encoding.py [--data ../shared/ni-sample] [--encoding instruct_pos_2_input] [--max-source-length 1024]

The tokenizer is a real `tokenizers` fast tokenizer of T5's shape (Unigram over Metaspace pieces), trained here on
the data's text because no model hub is reachable; pass --tokenizer to use a real checkpoint's tokenizer.json.
Both sides must produce identical sources and ids, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import NI_SAMPLE, best_of

from ni.data import require_split
from ni.encoding import PromptEncoder
from ni.encoding_fallback import fallback_encode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(NI_SAMPLE))
    ap.add_argument("--track", default="default")
    ap.add_argument("--encoding", default="instruct_pos_2_input")
    ap.add_argument("--max-source-length", type=int, default=1024)
    ap.add_argument("--tokenizer", default=None, help="path/name of a fast tokenizer (default: train one here)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not Path(args.data, "tasks").is_dir():
        print(f"skip: no data root at {args.data}")
        return 0

    if args.tokenizer:
        from trainer.hf import load_tokenizer

        tok, tok_desc = load_tokenizer(args.tokenizer), args.tokenizer
    else:
        from trainer.tiny import load_all_tasks, task_texts, train_tokenizer

        tok = train_tokenizer(task_texts(load_all_tasks(args.data)), vocab_size=8000)
        tok_desc = "T5-shaped Unigram, 8000 pieces, trained on the data"
    data = require_split(args.data, args.track, "test")
    pairs = list(data)
    limit = args.max_source_length

    def ours():  # type: ignore[no-untyped-def]
        return PromptEncoder(args.encoding, tok, limit).encode_many(pairs)  # fresh cache every run

    def reference():  # type: ignore[no-untyped-def]
        enc = PromptEncoder(args.encoding)
        return [fallback_encode(t, i, enc.choose(i), tok, limit) for t, i in pairs]

    t_ref, ref_out = best_of(args.repeats, reference)
    t_ours, our_out = best_of(args.repeats, ours)
    if our_out != ref_out:
        print("FAIL: outputs differ from the reference algorithm")
        return 1
    n = len(pairs)
    print(f"encoding {args.encoding}, max source {limit}, {n} instances of {len(data.tasks)} tasks; tokenizer: {tok_desc}")
    print(f"{'':12} {'seconds':>9} {'instances/s':>12}")
    print(f"{'reference':12} {t_ref:9.3f} {n / t_ref:12.0f}")
    print(f"{'ours':12} {t_ours:9.3f} {n / t_ours:12.0f}")
    print(f"speed-up: {t_ref / t_ours:.1f}x (identical sources and ids; target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
