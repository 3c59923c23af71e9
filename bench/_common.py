"""What every benchmark shares. They run as scripts (`python bench/NAME.py`, so bench/ is on sys.path and this
module imports as `_common`): importing it puts this checkout on sys.path, ahead of any installed copy, and names
the shared data directory ($TK_SHARED, else shared/ beside the repository)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TK_SHARED", REPO.parent / "shared"))
NI_SAMPLE = SHARED / "ni-sample"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of n calls in wall seconds, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
