"""Hostile input and faults, entry point by entry point: each case asserts the one-line message, the exit code, and
that nothing is left half-written or duplicated (issue 14). Add a case here whenever a new way to break a command
is found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from trainer.rundir import PARTIAL_IDENTITY, PARTIAL_PREDICTIONS, RunDir

REPO = Path(__file__).resolve().parents[1]


def cli(module: str, *args: str, cwd: Path = REPO, timeout: float = 600, env: dict | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    """The command failed with exit `code` and printed exactly one error line (no traceback) holding `needles`."""
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# --- 1. kept predictions carry the identity of what they were computed from ---------------------------------


def test_partial_predictions_of_another_identity_are_discarded(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    folder = run.path / PARTIAL_PREDICTIONS
    assert run.adopt_partial("aaa") is None  # nothing kept: the folder is stamped for this pass
    (folder / "rank-0.jsonl").write_bytes(b'{"i": 0, "text": "kept"}\n')
    assert run.adopt_partial("aaa") is None and (folder / "rank-0.jsonl").is_file()  # same identity: kept
    note = run.adopt_partial("bbb")
    assert note is not None and "discarded the kept predictions" in note and "\n" not in note
    assert not (folder / "rank-0.jsonl").exists() and (folder / PARTIAL_IDENTITY).read_text().strip() == "bbb"
    (folder / PARTIAL_IDENTITY).unlink()  # kept by an older version: unknown origin, never trusted
    (folder / "rank-0.jsonl").write_bytes(b'{"i": 0, "text": "kept"}\n')
    assert "no identity recorded" in (run.adopt_partial("bbb") or "")


@pytest.mark.slow
def test_a_retry_never_uses_predictions_kept_for_other_examples(tmp_path: Path, tiny_model: Path,
                                                                embedded: Path) -> None:
    """A failed attempt's kept predictions, made for another example set, are dropped with one line: the retry's
    predictions are those of a run that never failed."""
    from tests.test_trainer import small_run, write_config

    runs = {}
    for name in ("a", "b"):
        cfg = small_run(tmp_path / name, tiny_model, embedded, do_train=False, **{"eval.max_new_tokens": 4})
        runs[name] = write_config(tmp_path / f"{name}.yaml", **cfg)
    assert cli("trainer", "run", "--config", str(runs["a"])).returncode == 0
    partial = tmp_path / "b" / "run" / PARTIAL_PREDICTIONS
    partial.mkdir(parents=True)
    (partial / PARTIAL_IDENTITY).write_text("0" * 64 + "\n")  # kept for another example set
    (partial / "rank-0.jsonl").write_bytes(b"".join(orjson.dumps({"i": i, "text": "WRONG"}) + b"\n" for i in range(50)))
    r = cli("trainer", "run", "--config", str(runs["b"]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "discarded the kept predictions (made for other examples or another config)" in r.stdout
    a, b = (tmp_path / n / "run" / "predicted_examples.jsonl" for n in ("a", "b"))
    assert b"WRONG" not in b.read_bytes() and a.read_bytes() == b.read_bytes()
    assert not partial.exists()


def _unused() -> None:  # keep imports honest until later sections use them
    yaml.safe_dump({})
