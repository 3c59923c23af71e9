"""Training and prediction throughput: our trainer vs transformers' Seq2SeqTrainer (the original's way).

    python bench/bench_trainer.py [--data ../shared/ni-sample|synthetic] [--steps 30] [--batch-size 8]
                                  [--their-batch-size 8] [--skip-training]

A tiny T5 (trainer.tiny) trained on the data's text, the default track, `instruct_pos_2_input`. Both sides start
from a fresh copy of the same saved model, same seed, lr, batch size, optimizer (plain torch AdamW, constant lr,
clip 1.0), same encoded examples (input ids and the label of each instance).
Training -- ours: `trainer.train.train` (length-grouped batches + dynamic padding, Accelerate loop); theirs:
`Seq2SeqTrainer.train` (random batches: transformers 5's train_sampling_strategy="random", the old
group_by_length=False; `DataCollatorForSeq2Seq` dynamic padding). A forward pre-hook on the model
counts non-pad tokens (attention_mask + labels != -100) and stamps the time identically on both sides; steps + 1
optimizer steps run and the timed window is forward 1 -> forward steps+1 (steps full steps, model loading,
encoding, setup and the final checkpoint excluded).
Prediction -- ours: `trainer.predict.generate` (batches sorted by source length, the lean greedy loop: encoder
once, cached decoder steps, finished rows leave the batch); theirs: `Seq2SeqTrainer.predict`
with `predict_with_generate` (input order: the split's task order, as the original's test set) + decoding. Greedy,
same max_new_tokens and batch size; the predictions must be identical strings (exit status 1 otherwise).
Where the time goes on CPU (tiny model, batch 8, ~300-token sources): the encoder ~85 ms per batch (compute-bound,
the same kernels on both sides: only padding differs) and ~2.7 ms per decoding step, so prediction gains are
bounded by the padding saved and generate's per-step overhead.
CPU: 1 torch thread by default (--threads): on a shared 2-core machine a second thread that loses its core to
another process slows every op down by up to 10x, on both sides at random. GPU: bf16 training on both sides and
model FLOPs utilisation (6 x params x tokens/s / peak bf16 FLOPs).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import NI_SAMPLE

from ni.data import load_split, read_split
from trainer.dataset import Encoded, collate, encode_split, pick_labels

ENCODING = "instruct_pos_2_input"
PEAK_BF16_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}  # dense, SXM


class Meter:
    """Forward pre-hook: a timestamp and the (non-pad, padded) token counts of every training forward."""

    def __init__(self, model: Any):
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.padded: list[int] = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        mask, labels = kwargs["attention_mask"], kwargs["labels"]
        self.tokens.append(int(mask.sum()) + int((labels != -100).sum()))
        self.padded.append(mask.numel() + labels.numel())

    def result(self) -> dict[str, float]:
        """Steps 1..n (n = forwards - 1), timed from forward 1 to forward n + 1."""
        self.handle.remove()
        n = len(self.times) - 1
        secs = self.times[-1] - self.times[0]
        tokens = sum(self.tokens[:n])
        return {"steps": n, "secs": secs, "tok_s": tokens / secs, "tokens": tokens,
                "pad": 1 - tokens / sum(self.padded[:n])}


def fresh_model(model_dir: Path) -> Any:
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    return AutoModelForSeq2SeqLM.from_pretrained(model_dir)


def warm_up(model_dir: Path, enc: Encoded, pad_id: int) -> None:
    """One untimed training step and generation, so neither side pays the process's first-call costs."""
    model = fresh_model(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    batch = {k: v.to(model.device) for k, v in collate(enc.input_ids[:8], [y[0] for y in enc.labels[:8]], pad_id).items()}
    model(**batch).loss.backward()
    with torch.no_grad():
        model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4)


def bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def train_ours(a: argparse.Namespace, model_dir: Path, tok: Any, enc: Encoded, accelerator: Any, out: Path) -> dict:
    from accelerate.utils import set_seed

    from trainer import config as c
    from trainer.rundir import RunDir
    from trainer.train import StopFlag, train

    cfg = c.RunConfig(
        model=c.ModelConfig(name_or_path=str(model_dir)), seed=a.seed, do_predict=False,
        data=c.DataConfig(root=str(a.data), train_encoding=ENCODING, max_source_length=a.max_source_length),
        optim=c.OptimConfig(lr=a.lr, schedule="constant", max_steps=a.steps + 1, per_device_batch_size=a.batch_size,
                            max_grad_norm=1.0, weight_decay=0.0, group_by_length=True),
        checkpoint=c.CheckpointConfig(every_steps=10**9, save_final_model=False),
        logging=c.LoggingConfig(every_steps=10**9, progress=False),
    )
    run = RunDir(out)
    run.claim(cfg, force=False)
    set_seed(a.seed)
    model = fresh_model(model_dir)
    meter = Meter(model)
    train(cfg, run, accelerator, model, tok, lambda epoch: enc, lambda net: None, StopFlag())
    return meter.result() | {"params": sum(p.numel() for p in model.parameters())}


def hf_trainer(a: argparse.Namespace, model: Any, tok: Any, tmp: Path, train_set: list | None = None) -> Any:
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp / "hf"), per_device_train_batch_size=a.batch_size,
        per_device_eval_batch_size=a.their_batch_size or a.batch_size,
        learning_rate=a.lr, lr_scheduler_type="constant", max_steps=a.steps + 1, max_grad_norm=1.0, weight_decay=0.0,
        optim="adamw_torch", seed=a.seed, train_sampling_strategy="random", save_strategy="no", eval_strategy="no",
        report_to=[], use_cpu=not torch.cuda.is_available(), bf16=bf16(), dataloader_num_workers=0,
        disable_tqdm=True, predict_with_generate=True,
    )
    pad = DataCollatorForSeq2Seq(tok, model=model)

    def collator(features: list[dict]) -> dict:  # it returns labels=None without labels: Seq2SeqTrainer then
        return {k: v for k, v in pad(features).items() if v is not None}  # runs a loss forward and fails

    return Seq2SeqTrainer(model=model, args=args, train_dataset=train_set, processing_class=tok,
                          data_collator=collator)


def train_hf(a: argparse.Namespace, model_dir: Path, tok: Any, enc: Encoded, tmp: Path) -> dict:
    labels = pick_labels(enc, a.seed, 0)
    rows = [{"input_ids": x, "attention_mask": [1] * len(x), "labels": y}
            for x, y in zip(enc.input_ids, labels, strict=True)]
    model = fresh_model(model_dir)
    trainer = hf_trainer(a, model, tok, tmp, rows)
    meter = Meter(model)
    trainer.train()
    return meter.result()


def predict_ours(a: argparse.Namespace, model_dir: Path, tok: Any, enc: Encoded, accelerator: Any) -> tuple:
    from trainer.predict import generate

    model = fresh_model(model_dir).to(accelerator.device)
    t0 = time.perf_counter()
    preds = generate(model, tok, enc.input_ids, accelerator, a.batch_size, a.max_new_tokens)
    return preds, time.perf_counter() - t0


def predict_hf(a: argparse.Namespace, model_dir: Path, tok: Any, enc: Encoded, tmp: Path) -> tuple:
    import numpy as np

    trainer = hf_trainer(a, fresh_model(model_dir), tok, tmp)
    rows = [{"input_ids": x, "attention_mask": [1] * len(x)} for x in enc.input_ids]
    t0 = time.perf_counter()
    out = trainer.predict(rows, max_new_tokens=a.max_new_tokens, num_beams=1, do_sample=False)
    ids = np.where(out.predictions != -100, out.predictions, tok.pad_token_id)
    preds = tok.batch_decode(ids, skip_special_tokens=True)
    return preds, time.perf_counter() - t0


def prediction_split(model_dir: Path, enc: Encoded, pad_id: int, batch_size: int, max_new_tokens: int,
                     device: Any) -> dict[str, float]:
    """Where our prediction time goes: `trainer.predict.greedy` over the sorted batches, its encoder timed by hooks."""
    from trainer.predict import greedy

    net = fresh_model(model_dir).to(device).eval()
    encoder, stamps = net.get_encoder(), {"start": 0.0, "encoder": 0.0}
    encoder.register_forward_pre_hook(lambda *_: stamps.update(start=time.perf_counter()))
    encoder.register_forward_hook(lambda *_: stamps.update(encoder=stamps["encoder"] + time.perf_counter()
                                                           - stamps["start"]))
    order = sorted(range(len(enc)), key=lambda i: -len(enc.input_ids[i]))
    total, batches, steps = 0.0, 0, 0
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            b = collate([enc.input_ids[i] for i in order[k : k + batch_size]], None, pad_id)
            t0 = time.perf_counter()
            tokens = greedy(net, b["input_ids"].to(device), b["attention_mask"].to(device), max_new_tokens)
            total, batches, steps = total + time.perf_counter() - t0, batches + 1, steps + max(map(len, tokens))
    return {"encoder_ms": 1000 * stamps["encoder"] / batches, "step_ms": 1000 * (total - stamps["encoder"]) / steps}


def source_padding(lengths: list[int], order: list[int], batch_size: int) -> float:
    real = padded = 0
    for k in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[k : k + batch_size]]
        real, padded = real + sum(batch), padded + max(batch) * len(batch)
    return 1 - real / padded


def mfu(params: int, tok_s: float) -> str:
    if not torch.cuda.is_available():
        return ""
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return f"{100 * 6 * params * tok_s / peak:.2f}%" if peak else f"n/a ({name})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=NI_SAMPLE)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-source-length", type=int, default=512)
    p.add_argument("--max-target-length", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--train-per-task", type=int, default=100)
    p.add_argument("--test-instances", type=int, default=300)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best counts")
    p.add_argument("--their-batch-size", type=int, default=None,
                   help="Seq2SeqTrainer's prediction batch (default: --batch-size); e.g. our default 32 against its 8")
    p.add_argument("--skip-training", action="store_true", help="prediction only")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: immune to other loads on the cores; 0 = torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.data.name == "synthetic":  # the embedded data (no shared/ on this machine): generated, no download
        from ni.synthetic import ensure_default_data

        a.data = ensure_default_data()
    if not (a.data / "splits" / "default" / "train_tasks.txt").is_file():
        print(f"{a.data}: no NI data (splits/default/train_tasks.txt); skipping the trainer benchmark")
        return 0
    import transformers
    from accelerate import Accelerator
    from transformers import GenerationConfig

    from trainer.hf import load_tokenizer
    from trainer.tiny import build_tiny_model

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = build_tiny_model(tmp / "tiny", a.data, vocab_size=2000, d_model=128, num_layers=2)
        tok = load_tokenizer(str(model_dir))
        # The untrained model's greedy choice is <pad> at every step (every prediction ""): suppress it on both sides.
        gen = GenerationConfig.from_pretrained(model_dir)
        gen.suppress_tokens = [tok.pad_token_id]
        gen.save_pretrained(model_dir)
        lengths = (a.max_source_length, a.max_target_length)
        train_split = load_split(a.data, "default", "train", a.train_per_task, a.seed)
        per_task = math.ceil(a.test_instances / len(read_split(a.data, "default", "test") or [None]))
        test_split = load_split(a.data, "default", "test", per_task, a.seed)
        assert train_split is not None and test_split is not None
        train_enc = encode_split(train_split, ENCODING, tok, *lengths, a.seed)
        test_enc = encode_split(test_split, ENCODING, tok, *lengths, a.seed)
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16() else "no")
        print(f"{a.data}: {len(train_enc)} train / {len(test_enc)} test instances, {ENCODING}, source <= "
              f"{a.max_source_length}, batch {a.batch_size}, {a.steps} steps, device {accelerator.device}, "
              f"torch threads {torch.get_num_threads()}, best of {a.repeats}")

        warm_up(model_dir, train_enc, tok.pad_token_id)
        runs: dict[str, list] = {"ours": [], "theirs": [], "our_preds": [], "hf_preds": []}
        for r in range(a.repeats):  # alternating, best of each side
            if not a.skip_training:
                runs["ours"].append(train_ours(a, model_dir, tok, train_enc, accelerator, tmp / f"ours-{r}"))
                runs["theirs"].append(train_hf(a, model_dir, tok, train_enc, tmp))
            runs["our_preds"].append(predict_ours(a, model_dir, tok, test_enc, accelerator))
            runs["hf_preds"].append(predict_hf(a, model_dir, tok, test_enc, tmp))
        split = prediction_split(model_dir, test_enc, tok.pad_token_id, a.batch_size, a.max_new_tokens,
                                 accelerator.device)
    (our_preds, our_s), (hf_preds, hf_s) = (min(runs[k], key=lambda x: x[1]) for k in ("our_preds", "hf_preds"))

    n = len(test_enc)
    src = [len(x) for x in test_enc.input_ids]
    sorted_order = sorted(range(n), key=lambda i: (-src[i], i))
    their_batch = a.their_batch_size or a.batch_size
    rows = [("predict examples/s", n / our_s, n / hf_s, 2.0)]
    if not a.skip_training:
        ours, theirs = (max(runs[k], key=lambda x: x["tok_s"]) for k in ("ours", "theirs"))
        rows.insert(0, ("train non-pad tokens/s", ours["tok_s"], theirs["tok_s"], 1.3))
    print(f"\n{'':24} {'ours':>10} {'Seq2SeqTrainer':>15} {'ratio':>7}  target   (predict batch {a.batch_size} vs "
          f"{their_batch})")
    for label, x, y, target in rows:
        print(f"{label:24} {x:10.1f} {y:15.1f} {x / y:6.2f}x  >= {target}x {'ok' if x / y >= target else 'MISSED'}")
    print(f"{'predict source padding':24} {source_padding(src, sorted_order, a.batch_size):10.3f} "
          f"{source_padding(src, list(range(n)), their_batch):15.3f}")
    if not a.skip_training:
        print(f"{'train padding fraction':24} {ours['pad']:10.3f} {theirs['pad']:15.3f}")
        print(f"{'train tokens / seconds':24} {ours['tokens']:>5}/{ours['secs']:4.1f} "
              f"{theirs['tokens']:>10}/{theirs['secs']:4.1f}   ({ours['steps']} steps each)")
    print(f"{'our predict time split':24} encoder {split['encoder_ms']:.1f} ms per batch of {a.batch_size} (the same "
          f"kernels on both sides: only padding differs), decoding {split['step_ms']:.2f} ms per step")
    if torch.cuda.is_available() and not a.skip_training:
        print(f"{'model FLOPs utilisation':24} {mfu(ours['params'], ours['tok_s']):>10} "
              f"{mfu(ours['params'], theirs['tok_s']):>15}")
    differ = sorted({i for preds, _ in runs["our_preds"] + runs["hf_preds"] for i in range(n) if preds[i] != our_preds[i]})
    print(f"\npredictions: {n - len(differ)}/{n} identical in every run ({n} instances, greedy, max_new_tokens {a.max_new_tokens})")
    for i in differ[:3]:
        print(f"  {test_enc.ids[i]}:\n    ours   {our_preds[i]!r}\n    theirs {hf_preds[i]!r}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
