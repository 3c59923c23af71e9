"""Heuristic baselines of the paper (reference.md section 4), written as prediction files in the original's format."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ni.data import Instance, Task, require_split
from ni.io import write_jsonl


def copy_demo(task: Task, inst: Instance) -> str:
    """The first positive example's output ("" when the task has none)."""
    return task.positive_examples[0].output if task.positive_examples else ""


def copy_input(task: Task, inst: Instance) -> str:
    return inst.input


BASELINES: dict[str, Callable[[Task, Instance], str]] = {"copy_demo": copy_demo, "copy_input": copy_input}


def baseline_rows(
    name: str, root: str | os.PathLike[str], track: str, max_instances_per_task: int | None = None
) -> Iterator[dict[str, Any]]:
    """One prediction row per test instance: the task's fields + `id`, `Instance`, `prediction`."""
    predict = BASELINES[name]
    data = require_split(root, track, "test", max_instances_per_task=max_instances_per_task)
    for task, insts in zip(data.tasks, data.instances, strict=True):
        header = task.header()
        for inst in insts:
            yield {**header, "id": inst.id, "Instance": inst.to_json(), "prediction": predict(task, inst)}


def write_baseline(
    name: str,
    root: str | os.PathLike[str],
    track: str,
    out: str | os.PathLike[str],
    max_instances_per_task: int | None = None,
) -> int:
    """Write a baseline's predictions file atomically; returns the number of rows."""
    rows = list(baseline_rows(name, root, track, max_instances_per_task))  # all errors before the file opens
    return write_jsonl(Path(out), rows)
