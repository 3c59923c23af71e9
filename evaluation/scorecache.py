"""Scores of a predictions file, cached beside it by content hash (`.report-cache.json`).

The cached object is `Scores.to_cache()`. The key is the sha256 of the predictions file + the track + a format
version, so a changed or re-written file is scored again and an unchanged one is read back in milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import orjson

from evaluation.scoring import Scores
from ni.io import write_json

CACHE_NAME = ".report-cache.json"
CACHE_VERSION = 2  # 2: Scores.to_cache (groups nested, per-task stats with their category)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(sha: str, track: str, extra: str = "") -> str:
    return f"v{CACHE_VERSION}:{track}:{sha}:{extra}"


def load_cached(run_dir: Path, key: str) -> Scores | None:
    file = run_dir / CACHE_NAME
    try:
        data = orjson.loads(file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if isinstance(data, dict) and data.get("key") == key:
        return Scores.from_cache(data.get("scores"))
    return None


def store_cached(run_dir: Path, key: str, scores: Scores) -> None:
    """Best effort: a read-only run directory just means no cache."""
    with contextlib.suppress(OSError):
        write_json(run_dir / CACHE_NAME, {"key": key, "scores": scores.to_cache()})
