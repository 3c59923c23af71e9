"""The category of each predicted instance: its own, or read from the task file under a data root."""

from __future__ import annotations

from pathlib import Path

from evaluation.predictions import Prediction
from ni.data import TASK_RENAMES, Task, parse_task
from ni.errors import DataError


class TaskCategories:
    """Categories of tasks read from task files under a data root, each file read once."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._cache: dict[str, str] = {}

    def __call__(self, pred: Prediction, path: Path) -> str:
        if pred.category is not None:
            return pred.category
        if self.root is None:
            raise DataError(
                f"{path}:{pred.line}: field 'Categories': missing",
                hint="Pass --data ROOT to read categories from the task files.",
            )
        if pred.task not in self._cache:
            self._cache[pred.task] = self._load(pred.task).category
        cat = self._cache[pred.task]
        if not cat:
            raise DataError(f"{self.root}/tasks/{pred.task}.json: field 'Categories': missing or empty")
        return cat

    def _load(self, task: str) -> Task:
        assert self.root is not None
        names = [task] + [old for old, new in TASK_RENAMES.items() if new == task]
        for name in names:
            file = self.root / "tasks" / f"{name}.json"
            if file.is_file():
                return parse_task(file, name=task)
        raise DataError(f"{self.root}/tasks/{task}.json: task file not found (needed for the task's categories)")
