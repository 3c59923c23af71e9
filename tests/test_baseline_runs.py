"""The paper's baselines as runs (`model.name_or_path: baseline:*`): same run directory as a model's run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from ni.errors import ConfigError
from tests.api_fake import answer, serving
from tests.conftest import REPO
from trainer.config import validate_config


def test_baseline_configs_are_checked() -> None:
    with pytest.raises(ConfigError, match="is a baseline: set do_train: false"):
        validate_config({"model": {"name_or_path": "baseline:copy_demo"}}, "x.yaml")
    with pytest.raises(ConfigError, match="baseline:api needs model.api"):
        validate_config({"model": {"name_or_path": "baseline:api"}, "do_train": False}, "x.yaml")


@pytest.mark.golden
@pytest.mark.slow
def test_heuristic_baselines_through_the_launcher_match_the_golden_metrics(ni_sample: Path, golden: Path,
                                                                             tmp_path: Path) -> None:
    sweep = tmp_path / "b.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "heur",
        "base": {"model": {"name_or_path": "baseline:copy_demo"}, "do_train": False,
                 "data": {"root": str(ni_sample), "max_instances_per_eval_task": None}},
        "variants": [{"name": "copy_demo", "set": {"model.name_or_path": "baseline:copy_demo"}},
                     {"name": "copy_input", "set": {"model.name_or_path": "baseline:copy_input"}}],
    }))
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-root", str(tmp_path / "runs")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    want = json.loads((golden / "heuristic-metrics.json").read_text())
    manifest = orjson.loads((tmp_path / "runs" / "heur" / "manifest.json").read_bytes())
    assert len(manifest["runs"]) == 2
    for run_id, entry in manifest["runs"].items():
        run = tmp_path / "runs" / "heur" / run_id
        got = orjson.loads((run / "metrics.json").read_bytes())
        gold = want[entry["varied"]["variant"]]
        assert got["overall"] == gold["overall"] and got["per_task"] == gold["per_task"]
        assert got["per_category"] == gold["per_category"] and got["num_examples"] == gold["num_examples"]
        assert (run / "DONE").is_file()


@pytest.mark.slow
def test_api_baseline_as_a_run(tmp_path: Path, embedded: Path) -> None:
    with serving() as fake:
        cfg = {"model": {"name_or_path": "baseline:api",
                         "api": {"base_url": fake.url, "model": "fake", "api_key_env": "TK_TEST_API_KEY"}},
               "do_train": False, "data": {"root": str(embedded), "max_instances_per_eval_task": 2},
               "logging": {"progress": False}, "output_dir": str(tmp_path / "run")}
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
        r = subprocess.run([sys.executable, "-m", "trainer", "run", "--config", str(tmp_path / "r.yaml")], cwd=REPO,
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "TK_TEST_API_KEY": "sk-secret-value-123"})
        assert r.returncode == 0, r.stderr[-2000:]
    assert "(8 examples, baseline:api)" in r.stdout  # the headline names the baseline
    run = tmp_path / "run"
    rows = [orjson.loads(line) for line in (run / "predicted_examples.jsonl").read_bytes().splitlines()]
    assert len(rows) == 4 * 2 and all(row["prediction"].startswith("answer ") for row in rows)
    assert {row["prediction"] for row in rows} <= {answer(b["messages"][0]["content"]).strip().split(".")[0]
                                                  for b in fake.bodies}
    assert orjson.loads((run / "status.json").read_bytes())["state"] == "completed"
    for f in run.rglob("*"):
        assert not f.is_file() or b"sk-secret-value-123" not in f.read_bytes()
