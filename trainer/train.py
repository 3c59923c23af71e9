"""The training loop: Accelerate (DDP or DeepSpeed), gradient accumulation, clipping, warmup schedules,
checkpoints every N steps and on SIGTERM/SIGUSR2, exact resume, dev evaluation, logs.

Exact resume: the data order is a pure function of (seed, epoch) and the step counter, so a restarted run
reloads model/optimizer/scheduler/RNG states from the newest complete checkpoint and carries on at the very
batch where it stopped. Checkpoints live where `checkpoint.dir` says (default RUN/checkpoints), so a restart
into a fresh run directory resumes too.
"""

from __future__ import annotations

import errno
import math
import os
import resource
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ni.errors import ConfigError
from ni.run_layout import is_complete, trainer_state
from trainer.config import RunConfig
from trainer.dataset import Encoded, collate, epoch_batches, pick_labels, source_lengths
from trainer.rundir import RunDir


@dataclass
class StopFlag:
    """Set by SIGTERM / SIGUSR2 (what SLURM and Beaker send before preemption or timeout)."""

    signum: int | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def restore(self) -> None:
        """Put the previous handlers back -- unless a stop signal came: then more of them may follow (SLURM signals
        every process of the step and submitit's wrapper forwards its copy too), and one arriving under a default
        handler while the process tears down would kill it by signal instead of letting it exit 75 (preempted)."""
        if self.signum is not None:
            return
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


_TRACKED = ("epoch", "loss", "lr", "tokens_per_s", "nonpad_tokens_per_s", "peak_memory_mb")


@dataclass
class TrainResult:
    step: int
    preempted: bool
    model: Any  # as prepared by accelerate (DDP / DeepSpeed engine): predict with it, save through it


def batch_fields(cfg: RunConfig, world_size: int) -> dict[str, int]:
    """The batch a run trains with, as status.json and every train_log.jsonl row record it."""
    o = cfg.optim
    return {"world_size": world_size, "effective_batch_size": o.per_device_batch_size * world_size * o.grad_accum,
            "grad_accum": o.grad_accum, "per_device_batch_size": o.per_device_batch_size}


def check_resumable(saved: dict[str, Any], cfg: RunConfig, world_size: int, where: str) -> None:
    """A checkpoint resumes with another world size only when its data position maps exactly: the same per-device
    batch and ranks x accumulation (each step then takes the same micro-batches) and no ZeRO partitions."""
    if saved.get("world_size", world_size) == world_size:
        return
    now = batch_fields(cfg, world_size)
    same_batches = all(saved.get(k) == now[k] for k in ("per_device_batch_size", "effective_batch_size"))
    if same_batches and cfg.deepspeed.stage == 0:
        return
    why = "ZeRO partitions are per rank" if same_batches else "its data position does not map"
    raise ConfigError(
        f"{where}: written by {saved['world_size']} ranks (effective batch {saved.get('effective_batch_size', '?')}), "
        f"now {world_size} ranks (effective batch {now['effective_batch_size']}): {why}",
        hint=f"Resume with {saved['world_size']} ranks, or start afresh with --force.")


def _optimizer(model: Any, cfg: RunConfig) -> Any:
    import torch

    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            ndim = len(getattr(p, "ds_shape", p.shape))  # a ZeRO-3 partition is flat: its full shape is ds_shape
            (no_decay if ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]  # DeepSpeed drops empty groups; the scheduler must see the same
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def _scheduler(optimizer: Any, cfg: RunConfig, total_steps: int) -> Any:
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    if cfg.optim.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, cfg.optim.warmup_steps, total_steps)
    return get_constant_schedule_with_warmup(optimizer, cfg.optim.warmup_steps)


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def should_evaluate(cfg: RunConfig, step: int) -> bool:
    ev = cfg.eval
    if ev.every_steps and step % ev.every_steps == 0:
        return True
    return bool(ev.dense_every) and step <= ev.dense_until and step % ev.dense_every == 0


def train(
    cfg: RunConfig,
    run: RunDir,
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    train_set_for_epoch: Any,
    evaluate_dev: Any,
    stop: StopFlag,
) -> TrainResult:
    """`train_set_for_epoch(epoch) -> Encoded`; `evaluate_dev(model) -> dict | None` (None: no dev split)."""
    import torch

    o = cfg.optim
    world, ga = accelerator.num_processes, o.grad_accum
    first: Encoded = train_set_for_epoch(0)
    steps_per_epoch = math.ceil(math.ceil(len(first) / o.per_device_batch_size) / (world * ga))
    total_steps = o.max_steps if o.max_steps is not None else math.ceil(o.epochs * steps_per_epoch)

    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if accelerator.is_main_process:  # what the launcher's progress and ETA count to
        run.set_status("running", total_steps=total_steps)

    step = 0
    latest = run.latest_checkpoint()
    if latest is not None:
        saved = trainer_state(latest)
        check_resumable(saved, cfg, world, str(latest))
        accelerator.load_state(str(latest))
        step = saved["step"]
        if accelerator.is_main_process:
            run.log({"event": "resumed", "step": step, "checkpoint": latest.name})

    def save_checkpoint() -> None:
        target = run.checkpoint_dir(step)
        if is_complete(target):
            return
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(target))
        except Exception as e:
            err = _save_failed(e, target)
            if err is e:
                raise
            raise err from e
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            run.complete_checkpoint(target, {"step": step, "total_steps": total_steps, **batch_fields(cfg, world)})
            run.prune_checkpoints(cfg.checkpoint.keep_last)
        accelerator.wait_for_everyone()

    cache: dict[int, tuple[Encoded, Sequence[list[int]], list[list[int]]]] = {}

    def epoch_plan(epoch: int) -> tuple[Encoded, Sequence[list[int]], list[list[int]]]:
        if epoch not in cache:
            cache.clear()
            data = first if epoch == 0 else train_set_for_epoch(epoch)
            batches = epoch_batches(source_lengths(data), o.per_device_batch_size, cfg.seed, epoch,
                                    o.group_by_length, world * ga)
            cache[epoch] = (data, pick_labels(data, cfg.seed, epoch), batches)
        return cache[epoch]

    # A debug knob: slow every step down, to exercise preemption by hand or in tests.
    step_delay = float(os.environ.get("TK_DEBUG_STEP_DELAY", "0"))
    progress = _Progress(accelerator.is_main_process and cfg.logging.progress, total_steps, step)
    window = {"loss": 0.0, "n": 0, "tokens": 0, "padded": 0, "t0": time.perf_counter()}
    model.train()
    while step < total_steps:
        epoch, pos = divmod(step, steps_per_epoch)
        data, labels, batches = epoch_plan(epoch)
        start = (pos * world * ga) + accelerator.process_index
        for micro in range(ga):
            idx = batches[start + micro * world]
            batch = collate([data.input_ids[i] for i in idx], [labels[i] for i in idx], tokenizer.pad_token_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and o.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), o.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            window["loss"] += float(loss.detach())
            window["n"] += 1
            window["tokens"] += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
            window["padded"] += batch["input_ids"].numel() + batch["labels"].numel()
        step += 1
        if step_delay:
            time.sleep(step_delay)
        lr = scheduler.get_last_lr()[0]
        if step % cfg.logging.every_steps == 0 or step == total_steps:
            stats = torch.tensor([window["loss"], window["n"], window["tokens"], window["padded"]], dtype=torch.float64,
                                 device=accelerator.device)
            stats = accelerator.reduce(stats, reduction="sum")
            elapsed = time.perf_counter() - window["t0"]
            record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": float(stats[0] / stats[1]),
                      "lr": lr, "tokens_per_s": float(stats[3]) / elapsed, "nonpad_tokens_per_s": float(stats[2]) / elapsed,
                      "peak_memory_mb": round(_peak_memory_mb(), 1), **batch_fields(cfg, world), "time": time.time()}
            if accelerator.is_main_process:
                run.log(record)
            accelerator.log({f"train/{k}": v for k, v in record.items() if k in _TRACKED}, step=step)
            progress.update(step, record)
            window = {"loss": 0.0, "n": 0, "tokens": 0, "padded": 0, "t0": time.perf_counter()}
        else:
            progress.update(step, None)
        if should_evaluate(cfg, step) and step < total_steps:
            result = evaluate_dev(model)
            if result is not None:
                if accelerator.is_main_process:
                    run.log({"step": step, "event": "eval", **result})
                accelerator.log({f"dev/{k}": v for k, v in result.items()}, step=step)
        stop_now = agree(accelerator, stop.signum is not None)
        if step % cfg.checkpoint.every_steps == 0 or stop_now:
            save_checkpoint()
        if stop_now:
            progress.close()
            return TrainResult(step, preempted=True, model=model)
    progress.close()
    save_checkpoint()  # the end state too, so a run preempted while predicting does not train again
    return TrainResult(step, preempted=False, model=model)


def _save_failed(e: Exception, target: Path) -> Exception:
    """A checkpoint that could not be written: its half is removed (on a full disk that frees the room to record
    the end state), and a full disk is an OSError(ENOSPC) whatever raised it (safetensors raises its own error)."""
    shutil.rmtree(target, ignore_errors=True)
    if isinstance(e, OSError) or "No space left on device" not in str(e) and "os error 28" not in str(e):
        return e
    return OSError(errno.ENOSPC, f"No space left on device while saving checkpoint {target.name}", str(target.parent))


def agree(accelerator: Any, flag: bool) -> bool:
    """True on every rank if `flag` is true on any rank (all stop at the same step or batch)."""
    if accelerator.num_processes == 1:
        return flag
    import torch

    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


class _Progress:
    """A rich progress bar with loss, lr and tokens/s (main process only)."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.bar: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"))
        self.task = self.bar.add_task("train", total=total, completed=done, info="")
        self.bar.start()

    def update(self, step: int, record: dict[str, Any] | None) -> None:
        if self.bar is None:
            return
        info = {}
        if record is not None:
            info["info"] = (f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                            f"{record['nonpad_tokens_per_s']:.0f} tok/s")
        self.bar.update(self.task, completed=step, **info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
