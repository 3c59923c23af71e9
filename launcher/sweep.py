"""Sweep files: a base run config and how to vary it, expanded into runs.

    name: encodings                  # the sweep's name; runs go to runs/<name>/<run-id>/
    base: ../trainer/configs/tiny-cpu.yaml   # a run config file (relative to this file) or an inline mapping
    set: {optim.lr: 1.0e-4}          # fixed overrides for every run
    grid: {data.train_encoding: [a, b], data.test_encoding: [a, b]}   # cartesian product
    zip: {model.name_or_path: [m1, m2], optim.per_device_batch_size: [8, 2]}   # vary together
    variants:                        # named explicit rows, each with its own overrides and resources
      - {name: small, set: {optim.lr: 1.0e-3}, resources: {gpus: 1}}
    exclude: [{data.train_encoding: a, data.test_encoding: b}]   # drop matching combinations
    seeds: [1, 2]                    # replicates (sets `seed`)
    resources: {gpus: 8, nodes: 1, cpus: 16, memory: 64G, time: "24:00:00"}
    backend: {local: {...}, slurm: {...}, beaker: {...}}

A run's id is the start of its resolved config's digest (`RunConfig.digest`), so editing one value only changes the runs
that value reaches. Every error names the file and the line of the offending key.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import core_schema

from ni.errors import ConfigError
from ni.names import check_name
from ni.yamlio import read_yaml
from trainer.config import RunConfig, fields_of, merge, parse_override, validate_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT](?:i?B)?)\s*", re.IGNORECASE)
_DURATION = re.compile(r"\s*(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)\s*")
_GIB = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}


def duration_seconds(text: str) -> int:
    """A SLURM-style wall-clock limit, D-HH:MM:SS, HH:MM:SS or MM:SS, in seconds; ValueError for anything else
    (minutes and seconds below 60, hours below 24 after a day count, more than zero in all)."""
    m = _DURATION.fullmatch(text)
    if m:
        days, hours, minutes, seconds = (int(g) if g is not None else None for g in m.groups())
        ok = minutes is not None and seconds is not None and minutes < 60 and seconds < 60
        ok = ok and not (days is not None and (hours is None or hours >= 24))
        total = (days or 0) * 86400 + (hours or 0) * 3600 + (minutes or 0) * 60 + (seconds or 0)
        if ok and total > 0:
            return total
    raise ValueError(f"'{text}' is not a wall-clock limit: HH:MM:SS or D-HH:MM:SS, e.g. \"04:00:00\" or \"2-00:00:00\"")


class _Parsed:
    """A resource value read once, where the sweep is validated: the text as written (what `plan` shows and what a
    sweep file holds) and its parts; backends read the parts, never the text."""

    text: str

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, v: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(str))


@dataclass(frozen=True)
class Duration(_Parsed):
    """`resources.time` and Beaker's `min_runtime`: a wall-clock limit (see `duration_seconds`)."""

    text: str
    seconds: int

    @property
    def minutes(self) -> int:
        """Whole minutes, rounded up (at least one): SLURM's unit."""
        return max(1, -(-self.seconds // 60))

    @classmethod
    def parse(cls, v: Any) -> Duration:
        if isinstance(v, Duration):
            return v
        if not isinstance(v, str):
            raise ValueError(f"'{v}' is not a wall-clock limit: HH:MM:SS or D-HH:MM:SS, in quotes, e.g. \"04:00:00\"")
        return cls(v, duration_seconds(v))


@dataclass(frozen=True)
class Memory(_Parsed):
    """`resources.memory`: a positive number with a binary unit K, M, G or T (`64G`; `64GiB` and `64GB` read the
    same)."""

    text: str
    number: str  # as written: "64", "1.5"
    unit: str  # K, M, G or T
    suffix: str  # what followed the unit as written: "", "B" or "iB"
    gib: float

    @classmethod
    def parse(cls, v: Any) -> Memory:
        if isinstance(v, Memory):
            return v
        m = MEMORY.fullmatch(v) if isinstance(v, str) else None
        if not m or float(m.group(1)) <= 0:
            raise ValueError(f"'{v}' is not an amount of memory: a number with a unit K, M, G or T, e.g. 64G or 500M")
        unit = m.group(2)[0].upper()
        return cls(v, m.group(1), unit, m.group(2)[1:], round(float(m.group(1)) * _GIB[unit], 6))


class Resources(_Strict):
    gpus: int = Field(0, ge=0, description="GPUs per node")
    nodes: int = Field(1, ge=1)
    procs_per_node: int | None = Field(
        None, ge=1, description="trainer ranks per node; default: one per GPU (one on a CPU-only node)"
    )
    cpus: int = Field(4, ge=1, description="CPUs per node")
    memory: Memory = Field(Memory.parse("16G"),
                           description="per node: a number with a unit K, M, G or T (binary), e.g. 64G")
    time: Duration = Field(Duration.parse("04:00:00"),
                           description="wall-clock limit, HH:MM:SS or D-HH:MM:SS (or MM:SS)")

    @property
    def ranks_per_node(self) -> int:
        return self.procs_per_node or self.gpus or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node


class Container(_Strict):
    kind: Literal["none", "pyxis", "apptainer", "docker"] = "none"
    image: str | None = None
    mounts: list[str] = Field(default_factory=list, description="host:container[:ro] bind mounts")


class LocalSettings(_Strict):
    parallel: int = Field(1, ge=1, description="runs at a time")
    container: Container = Container()


_MANAGED_SBATCH = {"nodes", "ntasks_per_node", "cpus_per_task", "mem", "time", "array", "gpus_per_node", "gres",
                   "partition", "account", "qos", "constraint", "job_name", "output", "error", "signal", "chdir",
                   "wckey", "open_mode"}


class SlurmSettings(_Strict):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines run before the trainer")
    array_parallelism: int = Field(64, ge=1)
    max_array_size: int | None = Field(None, description="default: the cluster's MaxArraySize")
    container: Container = Container()
    signal_delay_s: int = Field(
        120, ge=10, description="USR2 this long before the time limit; also the ranks' grace to checkpoint after it"
    )
    wckey: str = Field("", description="workload characterization key (sbatch --wckey)")
    gres_style: Literal["gpus_per_node", "gres"] = Field(
        "gpus_per_node", description="gres: --gres=gpu:N, for clusters without select/cons_tres"
    )
    additional_parameters: dict[str, Any] = Field(
        default_factory=dict, description="more #SBATCH options, e.g. {exclusive: true, exclude: node7, mail_type: END}"
    )

    @field_validator("additional_parameters")
    @classmethod
    def _sbatch_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
                raise ValueError(f"'{key}' is not an sbatch option name (e.g. exclusive, exclude, mail_type, comment)")
            if key.replace("-", "_") in _MANAGED_SBATCH:
                raise ValueError(f"'{key}' is set by the launcher from resources/backend.slurm; set it there")
        return v


class BeakerSettings(_Strict):
    workspace: str | None = None
    clusters: list[str] = Field(default_factory=list)
    budget: str | None = None
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    preemptible: bool = Field(
        True, description="False: min_runtime = the time limit, i.e. protected from preemption for min_runtime only "
        "(a spec v2 task has no 'never preempt'; a longer run or a retry can still be preempted)"
    )
    min_runtime: Duration | None = Field(
        None, description="protected from preemption this long, HH:MM:SS or D-HH:MM:SS, e.g. \"02:00:00\"")
    auto_resume: bool = Field(True, description="restart a preempted task; the trainer resumes from its checkpoint")
    image: str | None = None
    retries: int = Field(2, ge=0)
    data_dataset: str | None = Field(None, description="Beaker dataset holding the NI data, mounted at /data")
    checkpoint_weka: str | None = Field(
        None,
        description="Weka bucket for checkpoints, mounted at /weka/<bucket>: each training run checkpoints to "
        "<bucket>/<checkpoint_prefix>/<sweep>/<run id>/checkpoints, which a job resumed after a preemption finds "
        "again (its result dataset /results is fresh). None: checkpoints stay in /results and are lost on preemption",
    )
    checkpoint_prefix: str = Field("tk-lab", description="the folder inside checkpoint_weka for this project's runs")
    secrets: dict[str, str] = Field(default_factory=dict, description="env var -> Beaker secret name")
    env: dict[str, str] = Field(default_factory=dict)
    shared_memory: str | None = Field("10GiB", description="/dev/shm of a task with more than one rank")
    synchronized_start_timeout_s: int = Field(
        600, ge=1, description="a multi-node task's replicas start together, or the task fails after this long"
    )
    multinode_env: dict[str, str] = Field(
        default_factory=dict, description="env of multi-node tasks only: the cluster's NCCL / InfiniBand settings, "
        "e.g. {NCCL_IB_HCA: '^=mlx5_bond_0', NCCL_SOCKET_IFNAME: ib}"
    )

    @field_validator("checkpoint_weka")
    @classmethod
    def _bucket_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"'{v}' is not a Weka bucket name (letters, digits, '.', '_', '-'; no '/')")
        return v

    @field_validator("checkpoint_prefix")
    @classmethod
    def _relative_path(cls, v: str) -> str:
        parts = v.strip("/").split("/")
        if not all(re.fullmatch(r"[A-Za-z0-9._-]+", p) and p not in (".", "..") for p in parts):
            raise ValueError(f"'{v}' is not a relative folder path (names of letters, digits, '.', '_', '-')")
        return "/".join(parts)


class BackendSettings(_Strict):
    """`backend:` of a sweep file: one settings model per backend, under its name."""

    local: LocalSettings = LocalSettings()
    slurm: SlurmSettings = SlurmSettings()
    beaker: BeakerSettings = BeakerSettings()


class Variant(_Strict):
    name: str

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v)
    set: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)


class SweepFile(_Strict):
    name: str = Field(description="runs go to RUNS_ROOT/<name>/; a safe name (see ni/names.py)")
    base: str | dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    resources: Resources = Resources()
    backend: BackendSettings = BackendSettings()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_name(v)


@dataclass
class PlannedRun:
    """One run of a sweep: its id, what varies, its resolved config and resources."""

    run_id: str
    varied: dict[str, Any]
    config: RunConfig
    resources: Resources
    variant: str | None = None

    def resource_key(self) -> str:
        return orjson.dumps(self.resources.model_dump(), option=orjson.OPT_SORT_KEYS).decode()


@dataclass
class Sweep:
    path: Path
    spec: SweepFile
    runs: list[PlannedRun]

    @property
    def name(self) -> str:
        return self.spec.name


# --- reading with line numbers -------------------------------------------------------------------------


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of its deepest existing parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == str(key)]
            if not match:
                return line
            line, node = match[0][0].start_mark.line + 1, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _fail(path: Path, node: yaml.Node | None, loc: tuple[Any, ...], msg: str, hint: str | None = None) -> ConfigError:
    line = _line_of(node, loc)
    return ConfigError(f"{path}{f':{line}' if line else ''}: {msg}", hint=hint)


MAX_RUNS = 1000  # a larger sweep is expanded only when asked (`--yes`): a typo in a grid is not a million runs


def load_sweep(path: str | os.PathLike[str], overrides: list[str] | None = None, max_runs: int | None = MAX_RUNS) -> Sweep:
    """Read, validate and expand a sweep file. `overrides` are `a.b=value` lines applied to every run; a sweep of
    more than `max_runs` combinations is refused with its count before anything is expanded."""
    p = Path(path)
    raw, node = read_yaml(p, "sweep file", with_nodes=True)
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            raise _fail(p, node, loc, f"unknown key '{'.'.join(map(str, loc))}'",
                        hint=f"Valid keys here: {', '.join(fields_of(SweepFile, loc[:-1]))}.") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise _fail(p, node, loc, f"{'.'.join(map(str, loc))}: {msg}") from None
    count = planned_count(spec)
    if max_runs is not None and count > max_runs:
        raise ConfigError(f"{p}: the sweep expands to {count:,} runs (before 'exclude:'), more than {max_runs:,}",
                          hint="Check 'grid:', 'zip:', 'variants:' and 'seeds:'; pass --yes to expand it anyway.")
    return Sweep(p, spec, expand(p, node, spec, overrides or []))


def planned_count(spec: SweepFile) -> int:
    """How many runs the sweep's lists multiply out to, without expanding them."""
    count = max(1, len(spec.variants)) * max(1, len(spec.seeds))
    for values in spec.grid.values():
        count *= len(values)
    if spec.zip:
        count *= min(len(v) for v in spec.zip.values())
    return count


def _base_config(p: Path, node: yaml.Node | None, spec: SweepFile) -> dict[str, Any]:
    if isinstance(spec.base, dict):
        return spec.base
    base = (p.parent / spec.base).resolve()
    if not base.is_file():
        raise _fail(p, node, ("base",), f"base: run config '{spec.base}' not found (looked at {base})")
    loaded = read_yaml(base, "base run config")[0] or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{base}: expected a mapping at the top level")
    return loaded


def _combinations(p: Path, node: yaml.Node | None, spec: SweepFile) -> list[tuple[str | None, dict[str, Any], dict]]:
    """(variant name, varied values, variant resources) for every run before seeds."""
    lengths = {k: len(v) for k, v in spec.zip.items()}
    if len(set(lengths.values())) > 1:
        raise _fail(p, node, ("zip",), f"zip: lists must have the same length, got {lengths}")
    zipped = [dict(zip(spec.zip, row, strict=True)) for row in zip(*spec.zip.values(), strict=True)]
    grid = [dict(zip(spec.grid, row, strict=True)) for row in itertools.product(*spec.grid.values())]
    zipped = zipped if spec.zip else [{}]  # no zip/grid: one row; an empty list in them: no rows
    grid = grid if spec.grid else [{}]
    names = [v.name for v in spec.variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        idx = names.index(dupes[0], names.index(dupes[0]) + 1)
        raise _fail(p, node, ("variants", idx, "name"), f"variant name '{dupes[0]}' is used twice")
    variants: list[tuple[str | None, dict[str, Any], dict]] = (
        [(v.name, v.set, v.resources) for v in spec.variants] or [(None, {}, {})]
    )
    out = []
    for (vname, vset, vres), g, z in itertools.product(variants, grid, zipped):
        varied = {**vset, **g, **z}
        if any(all(varied.get(k, _MISSING) == v for k, v in ex.items()) for ex in spec.exclude):
            continue
        out.append((vname, varied, vres))
    return out


_MISSING = object()


def expand(p: Path, node: yaml.Node | None, spec: SweepFile, extra: list[str]) -> list[PlannedRun]:
    base = _base_config(p, node, spec)
    base = merge(base, [*spec.set.items(), *(parse_override(o, str(p)) for o in extra)], source=str(p))
    combos = _combinations(p, node, spec)
    seeds: list[int | None] = list(spec.seeds) or [None]
    runs: list[PlannedRun] = []
    seen: dict[str, dict[str, Any]] = {}
    for (vname, varied, vres), seed in itertools.product(combos, seeds):
        values = dict(varied) if seed is None else {**varied, "seed": seed}
        raw = merge(base, values, source=str(p))
        raw.setdefault("name", spec.name)
        try:
            resources = Resources.model_validate({**spec.resources.model_dump(), **vres})
        except ValidationError as e:
            err = e.errors()[0]
            msg = err["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{p}: variant '{vname}': resources.{'.'.join(map(str, err['loc']))}: {msg}") from None
        raw["world_size"] = resources.world_size  # the topology is part of the run (its effective batch)
        try:
            cfg = validate_config(raw, f"{p} ({vname or 'run'} {values})")
        except ConfigError as e:
            raise ConfigError(str(e)) from None
        run_id = cfg.digest()[:10]
        if run_id in seen:
            continue  # two rows that resolve to the same config are one run
        seen[run_id] = values
        shown = {"variant": vname, **values} if vname else values
        runs.append(PlannedRun(run_id, shown, cfg, resources, vname))
    if not runs:
        raise ConfigError(f"{p}: the sweep expands to zero runs", hint="Check 'exclude:' and empty lists in 'grid:'.")
    return runs
