"""Prediction files in the original's format (reference.md section 3).

One JSON object per line with at least `id`, `Task`, `Instance` ({`id`, `input`, `output`: list of references})
and `prediction`; the original also writes every task field (`Definition`, `Categories`, ...), which is read when
present and otherwise ignored. Every problem is a `DataError` naming the file, the line and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from ni.data import as_text
from ni.errors import DataError

REQUIRED = ("id", "Task", "Instance", "prediction")


class Prediction(NamedTuple):  # immutable and cheap to build (a frozen dataclass costs ~3x per line)
    id: str
    task: str
    references: tuple[str, ...]
    prediction: str
    category: str | None  # the first of `Categories`, None when the line has none
    line: int


def _fail(path: Path, lineno: int, field: str | None, msg: str) -> DataError:
    where = f"{path}:{lineno}"
    return DataError(f"{where}: {msg}" if field is None else f"{where}: field '{field}': {msg}")


def _text(path: Path, lineno: int, field: str, value: Any) -> str:
    if type(value) is str:
        return value
    try:
        return as_text(value)
    except TypeError as e:
        raise _fail(path, lineno, field, str(e)) from None


def parse_line(path: Path, lineno: int, raw: Any) -> Prediction:
    # The common line (every field present, text already text) without the checks' cost; anything else is checked.
    if type(raw) is dict:
        inst, pred, id_, task = raw.get("Instance"), raw.get("prediction"), raw.get("id"), raw.get("Task")
        refs = inst.get("output") if type(inst) is dict else None
        cats = raw.get("Categories")
        if (type(refs) is list and refs and type(pred) is str and type(id_) is str and type(task) is str
                and (type(refs[0]) is str if len(refs) == 1 else all(type(r) is str for r in refs))
                and (cats is None or (type(cats) is list and (not cats or type(cats[0]) is str)))):
            return Prediction(id_, task, tuple(refs), pred, cats[0] if cats else None, lineno)
    return _parse_checked(path, lineno, raw)


def _parse_checked(path: Path, lineno: int, raw: Any) -> Prediction:
    if not isinstance(raw, dict):
        raise _fail(path, lineno, None, f"expected a JSON object, got {type(raw).__name__}")
    for key in REQUIRED:
        if key not in raw:
            raise _fail(path, lineno, key, "missing")
    inst = raw["Instance"]
    if not isinstance(inst, dict):
        raise _fail(path, lineno, "Instance", f"expected an object, got {type(inst).__name__}")
    if "output" not in inst:
        raise _fail(path, lineno, "Instance.output", "missing")
    refs = inst["output"]
    if not isinstance(refs, list):
        raise _fail(path, lineno, "Instance.output", f"references must be a list, got {type(refs).__name__}")
    if not refs:
        raise _fail(path, lineno, "Instance.output", "empty list of references")
    references = tuple(_text(path, lineno, f"Instance.output[{i}]", r) for i, r in enumerate(refs))
    cats = raw.get("Categories")
    category = None
    if isinstance(cats, list) and cats:
        category = _text(path, lineno, "Categories[0]", cats[0])
    elif cats is not None and not isinstance(cats, list):
        category = _text(path, lineno, "Categories", cats)
    return Prediction(
        id=_text(path, lineno, "id", raw["id"]),
        task=_text(path, lineno, "Task", raw["Task"]),
        references=references,
        prediction=_text(path, lineno, "prediction", raw["prediction"]),
        category=category,
        line=lineno,
    )


@dataclass
class PredictionsFile:
    predictions: list[Prediction]
    truncated: bool  # lenient reading only: a last line cut mid-way (no newline) was left out


def read_predictions_file(path: str | os.PathLike[str], lenient: bool = False) -> PredictionsFile:
    """Read a predictions JSONL file; blank lines are skipped; every bad line is a DataError naming the file, line
    and field. `lenient`, for a file that may still be written: a last line cut mid-way (invalid JSON and no newline)
    is left out and reported as `truncated`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: predictions file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    lines = data.split(b"\n")
    truncated = False
    if lenient and lines[-1].strip():
        try:
            orjson.loads(lines[-1])
        except orjson.JSONDecodeError:
            truncated = True
            lines.pop()
    out: list[Prediction] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise _fail(path, lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
        pred = parse_line(path, lineno, raw)
        if pred.id in seen:
            raise _fail(path, lineno, "id", f"duplicate id '{pred.id}' (first on line {seen[pred.id]})")
        seen[pred.id] = lineno
        out.append(pred)
    if not out:
        raise DataError(f"{path}: no complete prediction line" if lenient else f"{path}: no predictions in the file")
    return PredictionsFile(out, truncated)


def read_predictions(path: str | os.PathLike[str]) -> list[Prediction]:
    """The predictions of a complete file (`read_predictions_file`, strict)."""
    return read_predictions_file(path).predictions
