"""Finding run directories below report paths, and reading what each one holds (state, config, predictions).

A run directory is any directory with `config.yaml`, `status.json`, `predicted_examples.jsonl` or `DONE`
(`ni.run_layout`, which also reads its status). A sweep directory's `manifest.json` adds the sweep's varied values
and the runs that were submitted but have no directory ("missing"). Nothing found is ever dropped: unreadable parts
become flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from ni.errors import DataError
from ni.run_layout import CHECKPOINTS_DIR, CONFIG_FILE, LOCK_FILE, PREDICTIONS_FILE, RunLayout

_SKIP_DIRS = {CHECKPOINTS_DIR, "report", "__pycache__"}


@dataclass
class RunInfo:
    name: str  # path relative to the report root(s), e.g. "encodings/train=pos_2_input,test=..."
    path: Path
    state: str  # completed | running | failed | preempted | missing
    flags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    varied: dict[str, Any] | None = None  # from the sweep manifest; None when the run has none

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def wall_seconds(self) -> float | None:
        """Wall time over every attempt (a preempted run's earlier attempts cost time too)."""
        w = self.status.get("wall_seconds_total", self.status.get("wall_seconds"))
        return float(w) if isinstance(w, int | float) else None

    @property
    def last_attempt_seconds(self) -> float | None:
        w = self.status.get("wall_seconds")
        return float(w) if isinstance(w, int | float) else None

    @property
    def gpu_hours(self) -> float | None:
        ws, w = self.status.get("world_size"), self.wall_seconds
        device = str(self.status.get("device", "cuda"))
        if not isinstance(ws, int) or w is None or device.startswith("cpu"):
            return None
        return round(ws * w / 3600.0, 3)

    def data_setting(self, key: str, default: Any = None) -> Any:
        data = self.config.get("data")
        return data.get(key, default) if isinstance(data, dict) else default


def _is_run_dir(path: Path) -> bool:
    return RunLayout(path).is_run_dir()


def _read_mapping(path: Path, flags: list[str]) -> dict[str, Any]:
    """A run's JSON or YAML file as a dict ({} when missing); an unreadable one adds a flag instead of failing."""
    try:
        text = path.read_bytes()
        obj = yaml.safe_load(text) if path.suffix == ".yaml" else orjson.loads(text)
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError, yaml.YAMLError) as e:
        flags.append(f"{path.name} unreadable: {str(e).splitlines()[0]}")
        return {}
    return obj if isinstance(obj, dict) else {}


def read_run(path: Path, name: str, varied: dict[str, Any] | None = None) -> RunInfo:
    layout = RunLayout(path)
    status = layout.read_status()
    flags = [status.problem] if status.problem else []
    config = _read_mapping(path / CONFIG_FILE, flags)
    if status.state is not None:
        state = status.state
    elif (path / PREDICTIONS_FILE).is_file():
        state = "completed"  # a predictions-only directory (e.g. a heuristic baseline)
    else:
        state = "missing"
    if state == "running" and (path / LOCK_FILE).is_file() and layout.holder() is None:
        state = "missing"  # what `launcher status` says too: no live process runs it, and it did not finish
        flags.append("status.json says running, but no live process holds the run directory")
    if state == "failed" and status.error:
        flags.append(f"error: {status.error.splitlines()[0][:160]}")
    return RunInfo(name, path, state, flags, config, status.record, varied)


def _manifest_runs(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    file = sweep_dir / "manifest.json"
    if not file.is_file():
        return {}
    try:
        data = orjson.loads(file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise DataError(f"{file}: unreadable manifest: {str(e).splitlines()[0]}") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    return runs if isinstance(runs, dict) else {}


def discover(paths: list[Path]) -> list[RunInfo]:
    """Every run below `paths` (sorted by name), plus manifest entries without a directory (state "missing")."""
    out: list[RunInfo] = []
    seen: set[Path] = set()
    for top in paths:
        if not top.exists():
            raise DataError(f"{top}: no such runs directory")
        top = top.resolve()
        base = top.parent if _is_run_dir(top) else top
        prefix = top.name if len(paths) > 1 and not _is_run_dir(top) else ""

        def label(p: Path, base: Path = base, prefix: str = prefix) -> str:
            rel = p.relative_to(base).as_posix()
            return f"{prefix}/{rel}" if prefix else rel

        for dirpath, dirnames, _ in os.walk(top):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if n not in _SKIP_DIRS and not n.startswith("."))
            manifest = _manifest_runs(d)
            for run_id, entry in manifest.items():
                run_dir = d / run_id
                if not run_dir.is_dir():
                    mv = entry.get("varied") if isinstance(entry, dict) else None
                    info = RunInfo(label(run_dir), run_dir, "missing", ["no run directory"],
                                   varied=mv if isinstance(mv, dict) else None)
                    out.append(info)
            if d in seen or not _is_run_dir(d):
                continue
            seen.add(d)
            dirnames[:] = []
            own = _manifest_runs(d.parent).get(d.name)
            rv = own.get("varied") if isinstance(own, dict) else None
            out.append(read_run(d, label(d) or d.name, rv if isinstance(rv, dict) else None))
    return sorted(out, key=lambda r: r.name)


def config_differences(runs: list[RunInfo]) -> dict[str, dict[str, Any]]:
    """{run name: {dotted key: value}} for the config keys whose values differ between runs."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flat(v, key + "."))
            elif k != "output_dir":
                out[key] = v
        return out

    flats = {r.name: flat(r.config) for r in runs if r.config}
    keys: list[str] = []
    for f in flats.values():
        keys += [k for k in f if k not in keys]
    differing = [k for k in keys if len({repr(f.get(k)) for f in flats.values()}) > 1]
    return {name: {k: f.get(k) for k in differing} for name, f in flats.items()}
