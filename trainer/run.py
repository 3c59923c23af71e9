"""One run as a few named steps, top to bottom (`execute_model`):

    setup          the world size and batch, the model's precision, the accelerator, the claim of RUN
    load           inside `attempt.run_status` from here on: the seed, the model, the tokenizer (and the test split)
    train_model    the training loop, resuming from the newest checkpoint; the final model saved
    predict_model  the test split's predictions, resuming from the batches a stopped attempt kept
    finish         predicted_examples.jsonl, metrics.json, the model card of RUN/model, the headline

A baseline (`execute_baseline`) is another predictor in the same skeleton: claim, run_status, its predictions,
finish. No step writes status.json's state: `run_status` does, and turns a `Preempted` into the exit code.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.api_baseline import ApiSettings, api_rows
from evaluation.baselines import BASELINES
from evaluation.scoring import evaluate
from ni.data import SplitRef, load_split
from ni.errors import ConfigError
from ni.io import atomic_dir, atomic_open, write_json, write_jsonl
from ni.run_layout import METRICS_FILE, PREDICTIONS_FILE
from ni.synthetic import ensure_default_data
from trainer.accel import flat_hparams, make_accelerator, resolve_precision
from trainer.attempt import Attempt, Preempted, claim, run_status
from trainer.config import RunConfig, load_config
from trainer.dataset import encode_split, load_train_set
from trainer.export import model_card
from trainer.hf import load_model, load_model_config, load_tokenizer, resolve_model_path
from trainer.predict import PredictionStopped, generate, read_partial
from trainer.rundir import PARTIAL_PREDICTIONS, RunDir, partial_identity
from trainer.train import StopFlag, batch_fields, train


def default_output_dir(cfg: RunConfig) -> Path:
    return Path("runs") / "local" / f"{cfg.name}-{cfg.digest()[:10]}"


def execute(cfg: RunConfig, force: bool = False) -> int:
    """Run `cfg`; returns the process exit code (0 done or skipped, 75 preempted, raises on failure)."""
    run = RunDir.of(cfg, cfg.output_dir or default_output_dir(cfg))
    cfg = cfg.model_copy(update={"output_dir": str(run.path)})
    root = cfg.data.root or str(ensure_default_data())
    if cfg.model.name_or_path.startswith("baseline:"):
        return execute_baseline(cfg, run, root, force)
    # Before anything slow (the model, torch, the process group): a SIGTERM or USR2 while loading is kept and
    # honoured at the first step (checkpoint, exit 75) instead of killing the process by its default action.
    stop = StopFlag()
    stop.install()
    try:
        return execute_model(cfg, run, root, force, stop)
    finally:
        stop.restore()


def execute_model(cfg: RunConfig, run: RunDir, root: str, force: bool, stop: StopFlag) -> int:
    s = setup(cfg, run, root, force, stop)
    if s is None:
        return 0
    try:
        with run_status(run, writes=s.main, **s.status) as status:
            model = load(s, status)
            test = s.test_split() if s.cfg.do_predict else None  # before training: a missing split fails early
            if s.cfg.do_train:
                model.net = train_model(s, model)
            else:
                model.net = s.accelerator.prepare(model.net)
            if test is not None:
                preds = predict_model(s, model, test)
                if s.main:
                    finish(s.cfg, run, test, preds)
            s.accelerator.wait_for_everyone()
    finally:
        s.accelerator.end_training()
    return status.exit_code


def execute_baseline(cfg: RunConfig, run: RunDir, root: str, force: bool) -> int:
    """A baseline as a run: same run directory, predictions, metrics and DONE as a model's predict-only run."""
    if not claim(run, cfg, force):
        return 0
    with run_status(run, world_size=1, device="cpu") as status:
        test = evaluation_split(cfg, root).load()
        finish(cfg, run, test, baseline_predictions(cfg, run, test, root))
    return status.exit_code


# --- the steps of a model run ------------------------------------------------------------------------------


@dataclass
class Setup:
    """What setup hands the other steps."""

    cfg: RunConfig  # resolved for the world size
    run: RunDir
    root: str
    model_path: str
    accelerator: Any
    stop: StopFlag
    status: dict[str, Any]  # what status.json records about the attempt's ranks, batch and device

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def test_split(self) -> Any:
        """The test instances on the main process (it writes predictions and scores); the others need only the
        reference (they map the encoding cache)."""
        ref = evaluation_split(self.cfg, self.root)
        return ref.load() if self.main else ref


@dataclass
class Model:
    net: Any  # as loaded; after train_model, as accelerate prepared it (DDP / DeepSpeed engine)
    tokenizer: Any


def setup(cfg: RunConfig, run: RunDir, root: str, force: bool, stop: StopFlag) -> Setup | None:
    """The world size and batch, the model's precision, the accelerator and the claim of RUN; None when RUN completed
    before."""
    try:  # optim.effective_batch_size without a planned world size: the accumulation follows the ranks started
        cfg = cfg.for_world_size(cfg.world_size or int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as e:
        raise ConfigError(f"{run.path}: {e}",
                          hint="Choose an effective batch divisible by per-device batch x ranks, or start other ranks.") from None
    model_path = resolve_model_path(cfg.model.name_or_path, root)
    mixed = resolve_precision(cfg, load_model_config(model_path).model_type)
    accelerator = make_accelerator(cfg, run.path, mixed)
    if not claim(run, cfg, force, accelerator):
        return None
    if cfg.logging.tensorboard or cfg.logging.wandb:
        accelerator.init_trackers(cfg.name, config=flat_hparams(cfg))
    status = {**batch_fields(cfg, accelerator.num_processes), "distributed_type": str(accelerator.distributed_type.value),
              "mixed_precision": mixed, "device": accelerator.device.type}
    return Setup(cfg, run, root, model_path, accelerator, stop, status)


def load(s: Setup, status: Attempt) -> Model:
    from accelerate.utils import set_seed

    set_seed(s.cfg.seed)
    net = load_model(s.model_path, s.cfg.optim.gradient_checkpointing and s.cfg.do_train)
    if s.main:  # ZeRO-3 loads each rank's partition only (deepspeed.zero.Init marks those parameters with ds_id)
        status.update(loaded_partitioned=any(hasattr(p, "ds_id") for p in net.parameters()),
                      activation_checkpointing=any(getattr(m, "gradient_checkpointing", False) for m in net.modules()))
    return Model(net, load_tokenizer(s.cfg.model.tokenizer or s.model_path))


def train_model(s: Setup, model: Model) -> Any:
    """Train, evaluating on the dev split as configured; returns the trained net as accelerate prepared it. A stop
    signal ends training with a checkpoint: `Preempted`."""
    cfg, root = s.cfg, s.root
    dev = load_split(root, cfg.data.track, "dev", cfg.data.max_dev_instances_per_task, cfg.seed)
    if dev is None and (cfg.eval.every_steps or cfg.eval.dense_every) and s.main:
        print(f"{root}: no splits/{cfg.data.track}/dev_tasks.txt; skipping evaluation during training")

    def evaluate_dev(net: Any) -> dict[str, Any] | None:
        if dev is None:
            return None
        preds = greedy_predictions(s, Model(net, model.tokenizer), encoded(s, model.tokenizer, dev))
        return {f"eval_{k}": v for k, v in score(dev, preds, cfg.data.track)["overall"].items()}

    result = train(cfg, s.run, s.accelerator, model.net, model.tokenizer,
                   lambda epoch: main_first(s.accelerator, load_train_set, cfg, model.tokenizer, root, epoch),
                   evaluate_dev, s.stop)
    if result.preempted:
        raise Preempted(f"stopped at step {result.step} by signal {s.stop.signum}; state saved",
                        step=result.step, signal=s.stop.signum)
    if cfg.checkpoint.save_final_model:
        save_model(s, result.model, model.tokenizer)
    return result.model


def save_model(s: Setup, net: Any, tokenizer: Any) -> None:
    """RUN/model: the trained weights and the tokenizer, a folder from_pretrained loads."""
    state = s.accelerator.get_state_dict(net)  # on every rank: ZeRO-3 gathers the partitions
    if s.main:
        with atomic_dir(s.run.path / "model") as tmp:
            s.accelerator.unwrap_model(net).save_pretrained(tmp, state_dict=state)
            tokenizer.save_pretrained(tmp)


def predict_model(s: Setup, model: Model, test: Any) -> list[str]:
    """The test split's predictions (on every rank). Finished batches are kept in RUN/predictions.partial: a stop
    signal ends the attempt there (`Preempted`) and the next one predicts only the rest."""
    run, main = s.run, s.main
    partial = run.path / PARTIAL_PREDICTIONS
    test_ids = encoded(s, model.tokenizer, test)
    if main and len(test_ids) != len(test):  # the others hold only a reference to the split
        raise ConfigError(f"{run.path}: {len(test_ids)} encoded test examples for {len(test)} instances",
                          hint="The encoding cache is stale: remove it (see trainer/dataset.py cache_dir).")
    if main:  # kept predictions count only for exactly these examples and this config
        note = run.adopt_partial(partial_identity(s.cfg, test_ids))
        if note:
            run.log({"event": "prediction_partial_discarded", "note": note})
            print(note)
    s.accelerator.wait_for_everyone()
    kept = read_partial(partial)
    if kept and main:
        run.log({"event": "prediction_resumed", "kept": len(kept), "total": len(test)})
        print(f"{run.path}: resuming prediction, {len(kept)} of {len(test)} examples kept from the last attempt")
    try:
        return greedy_predictions(s, model, test_ids, partial, kept)
    except PredictionStopped as stopped:
        raise Preempted(f"{stopped}; kept for the next attempt", phase="predict", predicted=stopped.done,
                        signal=s.stop.signum) from None


def encoded(s: Setup, tokenizer: Any, split: Any) -> Any:
    """The split's encoded sources: the main process encodes a missing cache entry, the others then map it."""
    d = s.cfg.data
    with s.accelerator.main_process_first():
        return encode_split(split, d.eval_encoding, tokenizer, d.max_source_length, d.max_target_length, s.cfg.seed,
                            cache_key={}).input_ids


def greedy_predictions(s: Setup, model: Model, input_ids: Any, partial: Path | None = None,
                       kept: dict[int, str] | None = None) -> list[str]:
    """Greedy predictions; with `partial`, finished batches are kept there and a stop signal ends prediction."""
    stopping = (lambda: s.stop.signum is not None) if partial is not None else None
    return generate(model.net, model.tokenizer, input_ids, s.accelerator, s.cfg.eval.batch_size,
                    s.cfg.eval.max_new_tokens, partial=partial, should_stop=stopping, kept=kept)


def main_first(accelerator: Any, fn: Any, *args: Any) -> Any:
    """`fn(*args)` on the main process first, then on the others (which then find its cache entries)."""
    with accelerator.main_process_first():
        return fn(*args)


# --- shared by model and baseline runs ---------------------------------------------------------------------


def evaluation_split(cfg: RunConfig, root: str) -> SplitRef:
    """The run's test instances: the track's test split, capped per task as configured."""
    return SplitRef(Path(root), cfg.data.track, "test", cfg.data.max_instances_per_eval_task, cfg.seed)


def finish(cfg: RunConfig, run: RunDir, test: Any, preds: list[str]) -> None:
    """The run's results: predicted_examples.jsonl, metrics.json, the model card of RUN/model if it holds a model,
    and the headline in one line."""
    write_jsonl(run.path / PREDICTIONS_FILE, prediction_rows(test, preds))
    metrics = score(test, preds, cfg.data.track)
    write_json(run.path / METRICS_FILE, metrics)
    if (run.path / "model").is_dir():  # RUN/model becomes a publishable folder (and Beaker's result)
        with atomic_open(run.path / "model" / "README.md") as fh:
            fh.write(model_card(cfg, run.path, metrics, str(run.path / "model"), None))
    o = metrics["overall"]
    who = f", {cfg.model.name_or_path}" if cfg.model.name_or_path.startswith("baseline:") else ""
    print(f"{run.path}: rougeL {o['rougeL']:.2f}  exact_match {o['exact_match']:.2f}  "
          f"({metrics['num_examples']} examples{who})")


def prediction_rows(split: Any, preds: list[str]) -> list[dict[str, Any]]:
    """The original's predicted_examples.jsonl shape: task fields + id + Instance + prediction."""
    rows = []
    for (task, inst), pred in zip(split, preds, strict=True):
        row = task.header()
        row.update(id=inst.id, Instance=inst.to_json(), prediction=pred)
        rows.append(row)
    return rows


def score(split: Any, preds: list[str], track: str) -> dict[str, Any]:
    pairs = list(split)
    return evaluate(preds, [list(i.outputs) for _, i in pairs], [t.name for t, _ in pairs],
                    [t.category for t, _ in pairs], track=track)


def baseline_predictions(cfg: RunConfig, run: RunDir, split: Any, root: str) -> list[str]:
    """The paper's baselines (reference.md section 4) on the run's own test instances."""
    kind = cfg.model.name_or_path.removeprefix("baseline:")
    if kind in BASELINES:
        return [BASELINES[kind](task, inst) for task, inst in split]
    if kind != "api":
        raise ConfigError(f"unknown baseline '{kind}'", hint=f"Valid: {', '.join([*BASELINES, 'api'])}.")
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


def main_run(config: str, overrides: list[str], force: bool, dry_run: bool) -> int:
    cfg = load_config(config, overrides)
    if dry_run:
        sys.stdout.write(cfg.to_yaml())
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return execute(cfg, force=force)
