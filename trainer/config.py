"""One run = one config: a typed, strict schema (unknown keys rejected), YAML in, resolved YAML out.

    python -m trainer run --config run.yaml --set optim.lr=1e-4 --set data.train_encoding=tk_instruct

Overrides go through `apply_overrides` (dotted paths, YAML-typed values), the one merge function the launcher
uses too. `RunConfig.identity()` is the part of the config that decides results: the run id hashes it
(where things are written, `output_dir` and `checkpoint.dir`, is not part of it).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ni.encoding import ENCODING_NAMES
from ni.errors import ConfigError
from ni.names import check_name
from ni.yamlio import read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ApiModelConfig(_Strict):
    """An OpenAI-compatible endpoint for `name_or_path: baseline:api` (the key is read from `api_key_env`)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    endpoint: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(4, ge=1)


class ModelConfig(_Strict):
    name_or_path: str = Field(
        description="Hub name or local path of a seq2seq checkpoint; 'tiny' = a small random T5 built on the "
        "run's data (cached), for CPU debugging; 'baseline:copy_demo', 'baseline:copy_input', 'baseline:api' = "
        "the paper's baselines as runs (predict only)"
    )
    tokenizer: str | None = Field(None, description="defaults to name_or_path")
    api: ApiModelConfig | None = Field(None, description="the endpoint of baseline:api")


class DataConfig(_Strict):
    root: str | None = Field(None, description="NI data root; None = the embedded default dataset")
    track: Literal["default", "xlingual"] = "default"
    train_encoding: str = "instruct_pos_2_input"
    test_encoding: str | None = Field(None, description="defaults to train_encoding")
    max_instances_per_task: int | None = 100
    max_instances_per_eval_task: int | None = 100
    max_dev_instances_per_task: int | None = 20
    task_limit: int | None = Field(None, ge=1, description="keep the first N training tasks (number-of-tasks sweeps)")
    max_source_length: int = Field(1024, ge=1)
    max_target_length: int = Field(128, ge=1)

    @field_validator("train_encoding", "test_encoding")
    @classmethod
    def _known_encoding(cls, v: str | None) -> str | None:
        if v is not None and v not in ENCODING_NAMES:
            raise ValueError(f"unknown encoding '{v}'; valid names: {', '.join(ENCODING_NAMES)}")
        return v

    @property
    def eval_encoding(self) -> str:
        return self.test_encoding or self.train_encoding


class OptimConfig(_Strict):
    lr: float = Field(5e-5, gt=0)
    schedule: Literal["constant", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    per_device_batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    effective_batch_size: int | None = Field(
        None, ge=1,
        description="examples per optimizer step (per_device_batch_size x world size x grad_accum); when set, "
        "grad_accum is derived from the world size and must divide evenly")
    max_grad_norm: float | None = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    group_by_length: bool = True
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory for ~30% more compute")


class DeepSpeedConfig(_Strict):
    stage: Literal[0, 2, 3] = 0
    offload: bool = False


class CheckpointConfig(_Strict):
    every_steps: int = Field(2500, ge=1)
    keep_last: int = Field(2, ge=1)
    save_final_model: bool = Field(True, description="save_pretrained the trained model to RUN/model")
    dir: str | None = Field(
        None,
        description="where checkpoints go; None = RUN/checkpoints. Storage that outlives the run directory "
        "(the Beaker backend sets a Weka path here), so a restarted job with a fresh output_dir resumes; "
        "not part of the run's identity",
    )


class EvalConfig(_Strict):
    every_steps: int | None = Field(None, ge=1, description="score dev generations every N steps; None = never")
    dense_until: int = Field(0, ge=0, description="before this step, also evaluate every dense_every steps")
    dense_every: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _dense(self) -> EvalConfig:
        if self.dense_until > 0 and self.dense_every < 1:
            raise ValueError("dense_until needs dense_every >= 1 (evaluate every dense_every steps until then)")
        return self


class LoggingConfig(_Strict):
    every_steps: int = Field(10, ge=1)
    wandb: bool = False
    tensorboard: bool = False
    progress: bool = True


class RunConfig(_Strict):
    name: str = Field("run", description="names the run (trackers, default output dir); a safe name, see ni/names.py")
    model: ModelConfig
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    do_train: bool = True
    do_predict: bool = True
    precision: Literal["auto", "bf16", "fp32", "fp16"] = "auto"
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()
    seed: int = Field(42, ge=0)
    world_size: int | None = Field(
        None, ge=1,
        description="ranks the launcher planned (nodes x ranks per node); the trainer refuses to start with any "
        "other count. Part of the run's identity (the effective batch depends on it). None: whatever it is started with",
    )
    output_dir: str | None = Field(None, description="run directory; the launcher sets it")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v)

    @model_validator(mode="after")
    def _something_to_do(self) -> RunConfig:
        if not (self.do_train or self.do_predict):
            raise ValueError("nothing to do: set do_train and/or do_predict")
        if self.model.name_or_path.startswith("baseline:"):
            if self.do_train:
                raise ValueError(f"model.name_or_path {self.model.name_or_path} is a baseline: set do_train: false")
            if self.model.name_or_path == "baseline:api" and self.model.api is None:
                raise ValueError("baseline:api needs model.api (base_url, model)")
        if self.optim.effective_batch_size is not None and self.world_size is not None:
            accum = derived_grad_accum(self.optim, self.world_size)
            if "grad_accum" in self.optim.model_fields_set and self.optim.grad_accum != accum:
                o = self.optim
                raise ValueError(
                    f"optim.grad_accum {o.grad_accum} disagrees with optim.effective_batch_size "
                    f"{o.effective_batch_size}: {o.per_device_batch_size} per device x {self.world_size} ranks x "
                    f"{o.grad_accum} = {o.per_device_batch_size * self.world_size * o.grad_accum}; give only one of them")
            self.optim.grad_accum = accum
        return self

    def effective_batch_size(self, world_size: int | None = None) -> int | None:
        """Examples per optimizer step with `world_size` ranks (default: the planned world size; None if unknown)."""
        world = world_size or self.world_size
        return None if world is None else self.optim.per_device_batch_size * world * self.optim.grad_accum

    def for_world_size(self, world_size: int) -> RunConfig:
        """This config as run by `world_size` ranks: with optim.effective_batch_size and no planned world size,
        grad_accum is derived here, at start (the identity holds the effective batch instead)."""
        if self.optim.effective_batch_size is None or self.world_size is not None:
            return self
        optim = self.optim.model_copy(update={"grad_accum": derived_grad_accum(self.optim, world_size)})
        return self.model_copy(update={"optim": optim})

    def identity(self) -> dict[str, Any]:
        """What decides the results: everything but where they go and how they are displayed."""
        d = self.model_dump(mode="json")
        d.pop("output_dir")
        d["checkpoint"].pop("dir")
        d.pop("name")
        d["logging"] = {}
        d["optim"].pop("gradient_checkpointing")  # memory against compute; the same gradients
        # The effective batch once: by per-device batch x planned world size x accumulation when the world size is
        # planned (the accumulation derived from effective_batch_size if given), else by effective_batch_size alone
        # (the accumulation follows the world size at start).
        if self.world_size is not None or self.optim.effective_batch_size is None:
            d["optim"].pop("effective_batch_size")
        else:
            d["optim"].pop("grad_accum")
        return d

    def digest(self) -> str:
        return hashlib.sha256(orjson.dumps(self.identity(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def derived_grad_accum(optim: OptimConfig, world_size: int) -> int:
    """optim.effective_batch_size / (per-device batch x world size), which must be a whole number."""
    assert optim.effective_batch_size is not None
    per_step = optim.per_device_batch_size * world_size
    if optim.effective_batch_size % per_step:
        raise ValueError(
            f"optim.effective_batch_size {optim.effective_batch_size} is not a multiple of per_device_batch_size "
            f"{optim.per_device_batch_size} x world size {world_size} = {per_step}")
    return optim.effective_batch_size // per_step


def _set_dotted(d: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = d
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: '{key}': '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def merge(raw: dict[str, Any], values: Mapping[str, Any] | Iterable[tuple[str, Any]], source: str = "--set") -> dict[str, Any]:
    """A deep copy of `raw` with each dotted key set to its value, in order (`{"optim.lr": 1e-4}`: a sweep's typed
    values; `apply_overrides` parses `a.b=value` text into the same pairs)."""
    out = orjson.loads(orjson.dumps(raw))  # a deep copy
    for key, value in (values.items() if isinstance(values, Mapping) else values):
        _set_dotted(out, key.strip(), copy.deepcopy(value), source)
    return out


def parse_override(item: str, source: str = "--set") -> tuple[str, Any]:
    """`a.b=value` as (key, value), the value parsed as YAML, so `1e-4`, `true`, `null`, `[1, 2]` work."""
    if "=" not in item:
        raise ConfigError(f"{source}: '{item}' is not key=value", hint="For example: --set optim.lr=1e-4.")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply `a.b=value` overrides (see `parse_override`)."""
    return merge(raw, [parse_override(item, source) for item in overrides], source)


def fields_of(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The valid keys at `path` (a pydantic error location) inside `model`, for "Valid keys here: ..." hints.
    List indexes are skipped; a field holding a model, or a list of them, is descended into."""
    node: Any = model
    for key in path:
        if isinstance(key, int):
            continue
        field = getattr(node, "model_fields", {}).get(key)
        if field is None:
            break
        for ann in (field.annotation, *get_args(field.annotation)):
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                node = ann
                break
    return sorted(getattr(node, "model_fields", {}))


def validate_config(raw: Any, source: str) -> RunConfig:
    """Validate a raw mapping; the first error becomes one line naming the source and the field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = fields_of(RunConfig, tuple(err["loc"][:-1]))
            raise ConfigError(f"{source}: unknown key '{loc}'", hint=f"Valid keys here: {', '.join(valid)}.") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {loc or 'config'}: {msg}") from None


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    p = Path(path)
    raw = read_yaml(p, "config file")[0] or {}
    if overrides:
        raw = apply_overrides(raw, overrides)
    return validate_config(raw, str(p))
