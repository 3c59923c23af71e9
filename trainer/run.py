"""One run, top to bottom: claim the run directory, train (if asked), predict the test split, score, mark DONE."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ni.data import SplitRef, load_split, require_split
from ni.errors import ConfigError, TkError
from ni.io import atomic_open, write_json, write_jsonl
from trainer.config import RunConfig
from trainer.dataset import encode_split, load_train_set
from trainer.hf import load_model, load_model_config, resolve_model_path
from trainer.rundir import EXIT_PREEMPTED, PARTIAL_PREDICTIONS, RunDir, partial_identity
from trainer.train import StopFlag, batch_fields, train

DEEPSPEED_DIR = Path(__file__).parent / "deepspeed"


def default_output_dir(cfg: RunConfig) -> Path:
    return Path("runs") / "local" / f"{cfg.name}-{cfg.digest()[:10]}"


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]

    @property
    def native_bf16(self) -> bool:
        return self.capability >= (8, 0)  # Ampere and newer; older GPUs only emulate bf16 (many times slower)


def local_gpu() -> Gpu | None:
    import torch

    if not torch.cuda.is_available():
        return None
    cap = torch.cuda.get_device_capability()
    return Gpu(torch.cuda.get_device_name(), (int(cap[0]), int(cap[1])))


def resolve_precision(cfg: RunConfig, model_type: str, gpu: Gpu | None | str = "detect") -> str:
    """accelerate's mixed_precision value: bf16 where the GPU computes it natively, fp32 on CPU; never fp16 for
    T5, never emulated bf16. `gpu`: the device to decide for (None: no GPU); detected by default."""
    if cfg.precision == "fp16" and model_type in {"t5", "mt5", "umt5", "longt5"}:
        raise ConfigError(
            f"precision fp16 with a {model_type} model: T5 activations overflow in fp16 (NaN losses)",
            hint="Use precision: bf16 on GPUs that support it, or fp32.",
        )
    device = local_gpu() if isinstance(gpu, str) else gpu
    if cfg.precision == "auto":
        return "bf16" if device is not None and device.native_bf16 else "no"
    if cfg.precision == "bf16" and device is not None and not device.native_bf16:
        raise ConfigError(
            f"precision bf16: {device.name} (compute capability {device.capability[0]}.{device.capability[1]}) has no "
            "native bf16; it would be emulated, many times slower",
            hint="Use precision: fp32 (or auto) on this GPU, or GPUs of compute capability 8.0+ (A100, H100, L40).",
        )
    return {"fp32": "no"}.get(cfg.precision, cfg.precision)


def deepspeed_plugin(cfg: RunConfig, mixed_precision: str) -> Any:
    """accelerate's DeepSpeed plugin from the ZeRO config kept in the repo, with its "auto" values filled."""
    if cfg.deepspeed.stage == 0:
        return None
    from accelerate import DeepSpeedPlugin

    ds = json.loads((DEEPSPEED_DIR / f"zero{cfg.deepspeed.stage}.json").read_text())
    ds["train_micro_batch_size_per_gpu"] = cfg.optim.per_device_batch_size
    ds["gradient_accumulation_steps"] = cfg.optim.grad_accum
    ds["gradient_clipping"] = cfg.optim.max_grad_norm or 0.0
    ds["bf16"] = {"enabled": mixed_precision == "bf16"}
    if cfg.deepspeed.offload:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if cfg.deepspeed.stage == 3:
            ds["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": True}
    return DeepSpeedPlugin(hf_ds_config=ds)


def accelerator_kwargs(cfg: RunConfig, cuda: bool) -> dict[str, Any]:
    """Arguments of Accelerator beyond precision and plugins. On a CPU machine DeepSpeed ranks need gloo named
    explicitly: otherwise accelerate finds no backend for a non-`cpu` state and every rank believes it is alone
    (world size 1, rank 0) while DeepSpeed itself runs two."""
    if cuda or cfg.deepspeed.stage == 0:
        return {"cpu": not cuda}
    from accelerate.utils import InitProcessGroupKwargs

    return {"cpu": False, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}


def prediction_rows(split: Any, preds: list[str]) -> list[dict[str, Any]]:
    """The original's predicted_examples.jsonl shape: task fields + id + Instance + prediction."""
    rows = []
    for (task, inst), pred in zip(split, preds, strict=True):
        row = task.header()
        row.update(id=inst.id, Instance=inst.to_json(), prediction=pred)
        rows.append(row)
    return rows


def score(split: Any, preds: list[str], track: str) -> dict[str, Any]:
    from evaluation.scoring import evaluate

    pairs = list(split)
    return evaluate(preds, [list(i.outputs) for _, i in pairs], [t.name for t, _ in pairs],
                    [t.category for t, _ in pairs], track=track)


def execute(cfg: RunConfig, force: bool = False) -> int:
    """Run `cfg`; returns the process exit code (0 done or skipped, 75 preempted, raises on failure)."""
    run = RunDir.of(cfg, cfg.output_dir or default_output_dir(cfg))
    cfg = cfg.model_copy(update={"output_dir": str(run.path)})
    root = cfg.data.root or str(_embedded_data())
    if cfg.model.name_or_path.startswith("baseline:"):
        return execute_baseline(cfg, run, root, force)
    # Before anything slow (the model, torch, the process group): a SIGTERM or USR2 while loading is kept and
    # honoured at the first step (checkpoint, exit 75) instead of killing the process by its default action.
    stop = StopFlag()
    stop.install()
    try:
        return _execute(cfg, run, root, force, stop)
    finally:
        stop.restore()


def _execute(cfg: RunConfig, run: RunDir, root: str, force: bool, stop: StopFlag) -> int:
    from accelerate import Accelerator

    from trainer.hf import load_tokenizer

    try:  # optim.effective_batch_size without a planned world size: the accumulation follows the ranks started
        cfg = cfg.for_world_size(cfg.world_size or int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as e:
        raise ConfigError(f"{run.path}: {e}",
                          hint="Choose an effective batch divisible by per-device batch x ranks, or start other ranks.") from None
    model_path = resolve_model_path(cfg.model.name_or_path, root)
    mixed = resolve_precision(cfg, load_model_config(model_path).model_type)
    import torch

    trackers = [name for name, on in (("tensorboard", cfg.logging.tensorboard), ("wandb", cfg.logging.wandb)) if on]
    if "wandb" in trackers and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")  # no key: log locally, `wandb sync` later
        os.environ.setdefault("WANDB_DIR", str(run.path / "tracking"))
    accelerator = Accelerator(
        mixed_precision=mixed,
        gradient_accumulation_steps=cfg.optim.grad_accum,
        deepspeed_plugin=deepspeed_plugin(cfg, mixed),
        log_with=trackers or None,
        project_dir=str(run.path / "tracking"),
        **accelerator_kwargs(cfg, torch.cuda.is_available()),
    )
    if cfg.world_size is not None and accelerator.num_processes != cfg.world_size:
        raise ConfigError(
            f"{run.path}: world size {accelerator.num_processes}, but the launcher planned {cfg.world_size} "
            f"(world_size in the run config)",
            hint=f"Start {cfg.world_size} ranks, e.g. torchrun --nproc_per_node {cfg.world_size} -m trainer run ...",
        )
    main = accelerator.is_main_process
    if main:
        action = run.claim(cfg, force)
    accelerator.wait_for_everyone()
    if not main:
        action = "skip" if run.done() else "go"
    if action == "skip":
        if main:
            print(f"{run.path}: already completed (use --force to run again)")
        return 0

    if trackers:
        accelerator.init_trackers(cfg.name, config=flat_hparams(cfg))
    t0 = time.time()
    if main:
        run.set_status("running", attempt=run.status().get("attempt", 0) + 1,
                       **batch_fields(cfg, accelerator.num_processes),
                       distributed_type=str(accelerator.distributed_type.value), mixed_precision=mixed,
                       device=accelerator.device.type)
    try:
        from accelerate.utils import set_seed

        set_seed(cfg.seed)
        model = load_model(model_path, cfg.optim.gradient_checkpointing and cfg.do_train)
        if main:  # ZeRO-3 loads each rank's partition only (deepspeed.zero.Init marks those parameters with ds_id)
            run.set_status("running", loaded_partitioned=any(hasattr(p, "ds_id") for p in model.parameters()))
        tokenizer = load_tokenizer(cfg.model.tokenizer or model_path)
        # The main process writes predictions and scores, so it needs the instances; the others only the cache.
        test = SplitRef(Path(root), cfg.data.track, "test", cfg.data.max_instances_per_eval_task, cfg.seed)
        eval_split: Any = (test.load() if main else test) if cfg.do_predict else None

        def encoded(split: Any, desc: str) -> Any:
            with accelerator.main_process_first():  # the main process encodes a missing entry, the others map it
                return encode_split(split, cfg.data.eval_encoding, tokenizer, cfg.data.max_source_length,
                                    cfg.data.max_target_length, cfg.seed, cache_key={}).input_ids

        def predict(net: Any, split: Any, desc: str, partial: Path | None = None,
                    kept: dict[int, str] | None = None, input_ids: Any = None) -> list[str]:
            from trainer.predict import generate

            input_ids = encoded(split, desc) if input_ids is None else input_ids
            stopping = (lambda: stop.signum is not None) if partial is not None else None
            return generate(net, tokenizer, input_ids, accelerator, cfg.eval.batch_size, cfg.eval.max_new_tokens,
                            partial=partial, should_stop=stopping, kept=kept)

        if cfg.do_train:
            dev = load_split(root, cfg.data.track, "dev", cfg.data.max_dev_instances_per_task, cfg.seed)
            if dev is None and (cfg.eval.every_steps or cfg.eval.dense_every) and main:
                print(f"{root}: no splits/{cfg.data.track}/dev_tasks.txt; skipping evaluation during training")

            def evaluate_dev(net: Any) -> dict[str, Any] | None:
                if dev is None:
                    return None
                m = score(dev, predict(net, dev, "dev"), cfg.data.track)["overall"]
                return {f"eval_{k}": v for k, v in m.items()}

            result = train(cfg, run, accelerator, model, tokenizer,
                           lambda epoch: main_first(accelerator, load_train_set, cfg, tokenizer, root, epoch),
                           evaluate_dev, stop)
            model = result.model
            if result.preempted:
                if main:
                    run.set_status("preempted", step=result.step, signal=stop.signum,
                                   wall_seconds=round(time.time() - t0, 1))
                    print(f"{run.path}: stopped at step {result.step} by signal {stop.signum}; state saved")
                return EXIT_PREEMPTED
            if cfg.checkpoint.save_final_model:
                from ni.io import atomic_dir

                state = accelerator.get_state_dict(model)  # on every rank: ZeRO-3 gathers the partitions
                if main:
                    with atomic_dir(run.path / "model") as tmp:
                        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state)
                        tokenizer.save_pretrained(tmp)
        else:
            model = accelerator.prepare(model)

        if eval_split is not None:
            from trainer.predict import PredictionStopped, read_partial

            partial = run.path / PARTIAL_PREDICTIONS
            test_ids = encoded(eval_split, "test")
            if main and len(test_ids) != len(eval_split):  # the others hold only a reference to the split
                raise ConfigError(f"{run.path}: {len(test_ids)} encoded test examples for {len(eval_split)} instances",
                                  hint="The encoding cache is stale: remove it (see trainer/dataset.py cache_dir).")
            if main:  # kept predictions count only for exactly these examples and this config
                note = run.adopt_partial(partial_identity(cfg, test_ids))
                if note:
                    run.log({"event": "prediction_partial_discarded", "note": note})
                    print(note)
            accelerator.wait_for_everyone()
            kept = read_partial(partial)
            if kept and main:
                run.log({"event": "prediction_resumed", "kept": len(kept), "total": len(eval_split)})
                print(f"{run.path}: resuming prediction, {len(kept)} of {len(eval_split)} examples kept from the last "
                      "attempt")
            try:
                preds = predict(model, eval_split, "test", partial, kept, test_ids)
            except PredictionStopped as stopped:
                if main:
                    run.set_status("preempted", phase="predict", predicted=stopped.done, signal=stop.signum,
                                   wall_seconds=round(time.time() - t0, 1))
                    print(f"{run.path}: {stopped}; kept for the next attempt")
                return EXIT_PREEMPTED
            if main:
                write_jsonl(run.path / "predicted_examples.jsonl", prediction_rows(eval_split, preds))
                metrics = score(eval_split, preds, cfg.data.track)
                write_json(run.path / "metrics.json", metrics)
                if (run.path / "model").is_dir():  # RUN/model becomes a publishable folder (and Beaker's result)
                    from trainer.export import model_card

                    with atomic_open(run.path / "model" / "README.md") as fh:
                        fh.write(model_card(cfg, run.path, metrics, str(run.path / "model"), None))
                o = metrics["overall"]
                print(f"{run.path}: rougeL {o['rougeL']:.2f}  exact_match {o['exact_match']:.2f}  "
                      f"({metrics['num_examples']} examples)")
        accelerator.wait_for_everyone()
        if main:
            shutil.rmtree(run.path / PARTIAL_PREDICTIONS, ignore_errors=True)
            run.set_status("completed", wall_seconds=round(time.time() - t0, 1))
            run.mark_done()
        return 0
    except BaseException as e:
        if main:
            text = str(e) if isinstance(e, TkError) else "".join(traceback.format_exception_only(type(e), e)).strip()
            run.set_status("failed", error=text, wall_seconds=round(time.time() - t0, 1))
        raise
    finally:
        accelerator.end_training()


def main_first(accelerator: Any, fn: Any, *args: Any) -> Any:
    """`fn(*args)` on the main process first, then on the others (which then find its cache entries)."""
    with accelerator.main_process_first():
        return fn(*args)


def baseline_predictions(cfg: RunConfig, run: RunDir, split: Any, root: str) -> list[str]:
    """The paper's baselines (reference.md section 4) on the run's own test instances."""
    from evaluation.baselines import BASELINES

    kind = cfg.model.name_or_path.removeprefix("baseline:")
    if kind in BASELINES:
        return [BASELINES[kind](task, inst) for task, inst in split]
    if kind != "api":
        raise ConfigError(f"unknown baseline '{kind}'", hint=f"Valid: {', '.join([*BASELINES, 'api'])}.")
    from evaluation.api_baseline import ApiSettings, api_rows

    a = cfg.model.api
    assert a is not None  # the config validator requires it
    settings = ApiSettings(a.base_url, a.model, a.api_key_env, a.endpoint, a.concurrency)
    rows = api_rows(settings, root, cfg.data.track, run.path / "api_cache.jsonl",
                    cfg.data.max_instances_per_eval_task, cfg.logging.progress)
    by_id = {row["id"]: row["prediction"] for row in rows}
    missing = [inst.id for _, inst in split if inst.id not in by_id]
    if missing:
        raise ConfigError(f"baseline:api: no prediction for {len(missing)} test instance(s), e.g. {missing[0]}",
                          hint="The API baseline samples capped test sets with seed 42: use seed: 42 or no cap.")
    return [by_id[inst.id] for _, inst in split]


def execute_baseline(cfg: RunConfig, run: RunDir, root: str, force: bool) -> int:
    """A baseline as a run: same run directory, predictions, metrics and DONE as a model's predict-only run."""
    if run.claim(cfg, force) == "skip":
        print(f"{run.path}: already completed (use --force to run again)")
        return 0
    t0 = time.time()
    run.set_status("running", attempt=run.status().get("attempt", 0) + 1, world_size=1, device="cpu")
    try:
        split = require_split(root, cfg.data.track, "test", max_instances_per_task=cfg.data.max_instances_per_eval_task,
                              seed=cfg.seed)
        preds = baseline_predictions(cfg, run, split, root)
        write_jsonl(run.path / "predicted_examples.jsonl", prediction_rows(split, preds))
        metrics = score(split, preds, cfg.data.track)
        write_json(run.path / "metrics.json", metrics)
        print(f"{run.path}: rougeL {metrics['overall']['rougeL']:.2f} ({cfg.model.name_or_path})")
        run.set_status("completed", wall_seconds=round(time.time() - t0, 1))
        run.mark_done()
        return 0
    except BaseException as e:
        text = str(e) if isinstance(e, TkError) else "".join(traceback.format_exception_only(type(e), e)).strip()
        run.set_status("failed", error=text, wall_seconds=round(time.time() - t0, 1))
        raise


def flat_hparams(cfg: RunConfig) -> dict[str, Any]:
    """The config as flat scalars (what TensorBoard's hparams and W&B's config accept)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node if isinstance(node, int | float | str | bool) else str(node)

    walk("", cfg.model_dump(mode="json"))
    return out


def _embedded_data() -> Path:
    from ni.synthetic import ensure_default_data

    return ensure_default_data()


def main_run(config: str, overrides: list[str], force: bool, dry_run: bool) -> int:
    from trainer.config import load_config

    cfg = load_config(config, overrides)
    if dry_run:
        sys.stdout.write(cfg.to_yaml())
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return execute(cfg, force=force)
