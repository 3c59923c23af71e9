"""bench/gpu_check.sh: it refuses a machine without CUDA in one line, and its --dry-run runs every step on CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def test_the_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run")
def test_without_cuda_it_fails_fast_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out")})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine, or --dry-run"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dry_run_runs_every_step_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=1200, cwd=REPO,
                       env={**os.environ, "GPU_CHECK_OUT": str(out)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    stages = [0, 2, 3] if (out / "train-stage2.json").exists() else [0]
    for stage in stages:
        result = json.loads((out / f"train-stage{stage}.json").read_text())
        assert result["stage"] == stage and result["tokens_per_s"] > 0 and result["params"] > 0
        assert result["loaded_partitioned"] == (stage == 3)
    for name in ("predict-equal.txt", "predict-default.txt"):
        text = (out / name).read_text()
        assert "predict examples/s" in text and "identical in every run" in text
    assert "(predict batch 32 vs 8)" in (out / "predict-default.txt").read_text()
