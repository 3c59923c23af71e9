"""`python -m evaluation report` / `compare`: run directories written by hand (no training), predictions from the
heuristic baselines on the synthetic data root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from evaluation.baselines import write_baseline
from evaluation.bootstrap import paired_diff, task_interval
from evaluation.cli import main as evaluation_main
from evaluation.report import build_report
from evaluation.scorecache import CACHE_VERSION
from ni.synthetic import generate
from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("report") / "data")


def make_run(
    path: Path,
    data: Path,
    baseline: str | None = "copy_demo",
    state: str | None = "completed",
    done: bool = True,
    config: dict[str, Any] | None = None,
    wall: float = 360.0,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"data": {"root": str(data), "track": "default", **(config or {})}, "seed": 42}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    if state is not None:
        status: dict[str, Any] = {"state": state, "wall_seconds": wall, "world_size": 2}
        if state == "failed":
            status["error"] = "RuntimeError: CUDA out of memory"
        (path / "status.json").write_bytes(orjson.dumps(status))
    if baseline is not None:
        write_baseline(baseline, data, "default", path / "predicted_examples.jsonl")
    if done:
        (path / "DONE").write_text("2024-01-01\n")
    return path


def write_manifest(sweep: Path, varied: dict[str, dict[str, Any]]) -> None:
    runs = {rid: {"varied": v, "backend": "local", "jobs": ["local-1"]} for rid, v in varied.items()}
    (sweep / "manifest.json").write_bytes(orjson.dumps({"sweep": sweep.name, "runs": runs}))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evaluation", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def encoding_sweep(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 x 2 train x test encoding sweep with a manifest."""
    sweep = tmp_path_factory.mktemp("runs") / "encodings"
    varied = {}
    for i, (tr, te) in enumerate([("instruct_input", "instruct_input"), ("instruct_input", "pos_2_input"),
                                  ("pos_2_input", "instruct_input"), ("pos_2_input", "pos_2_input")]):
        rid = f"r{i}"
        varied[rid] = {"data.train_encoding": tr, "data.test_encoding": te}
        make_run(sweep / rid, data_root, "copy_demo" if i % 2 else "copy_input",
                 config={"train_encoding": tr, "test_encoding": te})
    write_manifest(sweep, varied)
    return sweep


def test_golden_report_numbers_equal_evaluation_score(encoding_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert evaluation_main(["report", str(encoding_sweep), "--out", str(out), "--format", "json,csv"]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert [r["run"] for r in report["rows"]] == ["r0", "r1", "r2", "r3"]
    for row in report["rows"]:
        metrics = tmp_path / f"{row['run']}.json"
        assert evaluation_main(["score", str(encoding_sweep / row["run"] / "predicted_examples.jsonl"),
                                "--out", str(metrics)]) == 0
        m = orjson.loads(metrics.read_bytes())
        assert row["rougeL"] == m["overall"]["rougeL"] and row["exact_match"] == m["overall"]["exact_match"]
        assert row["rouge1"] == m["overall"]["rouge1"] and row["num_examples"] == m["num_examples"]
        assert row["per_category"] == m["per_category"] and row["headline"] == m["headline"]
        assert row["per_task"] == {k.split("_for_", 1)[1]: v for k, v in m["per_task"].items()
                                   if k.startswith("rougeL_for_")}
        assert row["state"] == "completed" and row["ok"] and row["wall_seconds"] == 360.0 and row["gpu_hours"] == 0.2
        assert row["varied"] == {"data.train_encoding": row["varied"]["data.train_encoding"],
                                 "data.test_encoding": row["varied"]["data.test_encoding"]}
        lo, hi = row["ci"]["rougeL"]
        assert lo <= row["rougeL"] <= hi
    # the encoding matrix, the computed baselines (equal to the runs that are those baselines), no §7 numbers
    (matrix,) = [p for p in report["pivots"] if p["kind"] == "matrix"]
    assert matrix["rows_axis"] == "data.train_encoding" and matrix["cols"] == ["instruct_input", "pos_2_input"]
    assert matrix["values"][0] == [report["rows"][0]["rougeL"], report["rows"][1]["rougeL"]]
    base = {b["name"]: b["rougeL"] for b in report["baselines"]}
    assert base == {"copy_input": report["rows"][0]["rougeL"], "copy_demo": report["rows"][1]["rougeL"]}
    assert report["published"] == []  # synthetic test tasks: the paper's numbers are not comparable
    csv_lines = (out / "runs.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("run,data.train_encoding,data.test_encoding,state")


def test_rereport_reads_the_cache_and_rescores_a_changed_file(encoding_sweep: Path, data_root: Path,
                                                                tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    shutil.copytree(encoding_sweep, sweep)
    first = build_report([sweep], baselines=False)
    cache = orjson.loads((sweep / "r0" / ".report-cache.json").read_bytes())
    assert cache["key"].startswith(f"v{CACHE_VERSION}:default:")
    # a poisoned cache entry with the right key is what a re-report shows: proof it was not scored again
    cache["scores"]["overall"]["rougeL"] = 99.0
    (sweep / "r0" / ".report-cache.json").write_bytes(orjson.dumps(cache))
    assert build_report([sweep], baselines=False)["rows"][0]["rougeL"] == 99.0
    write_baseline("copy_demo", data_root, "default", sweep / "r0" / "predicted_examples.jsonl")  # new content
    again = build_report([sweep], baselines=False)
    assert again["rows"][0]["rougeL"] == first["rows"][1]["rougeL"]


def _broken_sweep(root: Path, data: Path) -> Path:
    sweep = root / "broken"
    make_run(sweep / "ok", data)
    make_run(sweep / "failed", data, baseline=None, state="failed", done=False)
    running = make_run(sweep / "running", data, state="running", done=False)
    raw = (running / "predicted_examples.jsonl").read_bytes()
    cut = raw.index(b"\n", len(raw) // 2) + 40  # 40 bytes into a line
    (running / "predicted_examples.jsonl").write_bytes(raw[:cut])
    write_manifest(sweep, {"ok": {"lr": 1e-4}, "failed": {"lr": 3e-4}, "running": {"lr": 1e-3},
                           "lost": {"lr": 3e-3}})
    return sweep


def test_failed_running_truncated_and_missing_runs_are_flagged(data_root: Path, tmp_path: Path) -> None:
    sweep = _broken_sweep(tmp_path, data_root)
    r = run_cli("report", str(sweep), "--out", str(tmp_path / "rep"), "--format", "md,json,csv")
    assert r.returncode == 0, r.stderr
    report = orjson.loads((tmp_path / "rep" / "report.json").read_bytes())
    rows = {row["run"]: row for row in report["rows"]}
    assert set(rows) == {"ok", "failed", "running", "lost"}
    assert rows["ok"]["ok"] and rows["failed"]["state"] == "failed" and rows["lost"]["state"] == "missing"
    assert any("out of memory" in f for f in rows["failed"]["flags"])
    assert rows["running"]["state"] == "running" and any("truncated" in f for f in rows["running"]["flags"])
    kept = (sweep / "running" / "predicted_examples.jsonl").read_bytes().count(b"\n")
    assert rows["running"]["num_examples"] == kept
    md = (tmp_path / "rep" / "report.md").read_text()
    for name in ("failed", "running", "lost", "truncated"):
        assert name in md
    assert {p["run"] for p in report["problems"]} == {"failed", "running", "lost"}
    strict = run_cli("report", str(sweep), "--out", str(tmp_path / "rep2"), "--format", "md", "--strict")
    assert strict.returncode == 1 and "need attention" in strict.stdout


def test_config_differences_when_there_is_no_manifest(data_root: Path, tmp_path: Path) -> None:
    for n in (8, 64):
        make_run(tmp_path / "inst" / f"n{n}", data_root, config={"max_instances_per_task": n})
    report = build_report([tmp_path / "inst"], baselines=False)
    assert [r["varied"] for r in report["rows"]] == [{"data.max_instances_per_task": 64},
                                                     {"data.max_instances_per_task": 8}]
    (curve,) = report["pivots"]
    assert curve["kind"] == "curve" and curve["x"] == [8, 64]


def test_unknown_format_and_missing_dir_are_one_line_errors(tmp_path: Path) -> None:
    r = run_cli("report", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope: no such runs directory" in r.stderr
    (tmp_path / "x").mkdir()
    r = run_cli("report", str(tmp_path / "x"), "--format", "pdf")
    assert r.returncode == 2 and "--format: unknown format 'pdf'" in r.stderr


def test_compare_two_runs(encoding_sweep: Path, tmp_path: Path) -> None:
    r = run_cli("compare", str(encoding_sweep / "r1"), str(encoding_sweep / "r0"), "--out", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stderr
    c = orjson.loads((tmp_path / "c.json").read_bytes())
    report = build_report([encoding_sweep], baselines=False)
    diff = report["rows"][1]["rougeL"] - report["rows"][0]["rougeL"]
    assert c["kind"] == "runs" and abs(c["overall"]["rougeL"]["diff"] - diff) < 1e-3
    lo, hi = c["overall"]["rougeL"]["ci"]
    assert lo <= c["overall"]["rougeL"]["diff"] <= hi and c["per_task"] and c["per_category"]
    r = run_cli("compare", str(encoding_sweep), str(encoding_sweep))
    assert r.returncode == 0 and "+0.00" in r.stdout


def test_bootstrap_is_seeded_and_paired() -> None:
    sums, counts = [10.0, 50.0, 90.0, 30.0], [100, 100, 100, 100]
    assert task_interval(sums, counts, seed=1) == task_interval(sums, counts, seed=1)
    ci = task_interval(sums, counts)
    assert ci is not None and ci.low <= 45.0 <= ci.high
    a = {"t1": (10.0, 100), "t2": (50.0, 100), "t3": (90.0, 100)}
    b = {t: (s - 5.0, n) for t, (s, n) in a.items()}
    d = paired_diff(a, b)
    assert d is not None and d.diff == 5.0 and d.low == d.high == 5.0 and d.significant


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium(encoding_sweep: Path, data_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(encoding_sweep, sweep)
    make_run(sweep / "r9", data_root, baseline=None, state="failed", done=False)
    out = tmp_path / "report"
    assert evaluation_main(["report", str(sweep), "--out", str(out), "--format", "html"]) == 0
    html = out / "report.html"
    assert (out / "matrix-0.png").is_file() and (out / "categories.png").is_file()
    assert (out / "configurations.png").is_file()
    assert "src=\"data:image/png;base64," in html.read_text() and "<link" not in html.read_text()
    artifacts = Path(os.environ.get("TK_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
        dom = subprocess.run([*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        subprocess.run([*common, f"--screenshot={shot}", "--window-size=1400,2000", html.as_uri()],
                       capture_output=True, timeout=120, check=True)
    page = dom.stdout
    assert 'data-images-ok="true"' in page, page[:500]
    assert 'data-images-total="3"' in page  # configurations vs baselines, the matrix, the categories
    for run in ("r0", "r1", "r2", "r3", "r9"):
        assert f'data-run="{run}"' in page
    assert 'data-state="failed"' in page
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_runs_scored_in_parallel_equal_runs_scored_one_by_one(data_root: Path, tmp_path: Path) -> None:
    from evaluation.report import score_runs
    from evaluation.runs import discover

    sweep = tmp_path / "sweep"
    for i, name in enumerate(["copy_input", "copy_demo", "copy_input", None]):
        make_run(sweep / f"r{i}", data_root, name, config={"train_encoding": f"e{i}"})
    cut = sweep / "r2" / "predicted_examples.jsonl"
    cut.write_bytes(cut.read_bytes()[:-40])  # a last line cut mid-way: flagged, the rest scored
    (sweep / "r4").mkdir()
    (sweep / "r4" / "predicted_examples.jsonl").write_text('{"id": "x"}\n')  # unusable: a flag, no scores

    serial_runs, parallel_runs = discover([sweep]), discover([sweep])
    serial = score_runs(serial_runs, use_cache=False, workers=1)
    parallel = score_runs(parallel_runs, use_cache=False, workers=2)
    assert orjson.dumps(serial) == orjson.dumps(parallel)
    assert [r.flags for r in serial_runs] == [r.flags for r in parallel_runs]
    assert serial["r3"] is None and serial["r4"] is None and serial["r2"] is not None and serial["r2"].truncated
    assert any("predictions unusable" in f for f in parallel_runs[4].flags)
    # the parallel pass wrote each run's cache; read back, the scores are the same bytes
    cached = score_runs(discover([sweep]), use_cache=True, workers=2)
    assert orjson.dumps(cached) == orjson.dumps(serial)


def test_wall_time_and_gpu_hours_count_every_attempt(tmp_path: Path) -> None:
    """A run preempted once: the report's wall time and GPU hours are the sum over attempts; the last attempt's
    own wall time stays in the JSON/CSV rows."""
    from evaluation.runs import RunInfo

    run = RunInfo(name="r", path=tmp_path, state="completed",
                  status={"wall_seconds": 1800.0, "wall_seconds_total": 5400.0, "world_size": 2, "device": "cuda:0"})
    assert (run.wall_seconds, run.last_attempt_seconds, run.gpu_hours) == (5400.0, 1800.0, 3.0)
    once = RunInfo(name="s", path=tmp_path, state="completed", status={"wall_seconds": 60.0})
    assert (once.wall_seconds, once.last_attempt_seconds) == (60.0, 60.0)
