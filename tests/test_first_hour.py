"""What a new user sees first (issue 13): seeds reported as replicates, heuristic baselines on the runs' own test
data (embedded data included), published numbers only for the real NI test split, a report that says what it
was tested on, and the single-GPU debug sweep's plan. Run directories are written by hand from the heuristic
baselines' predictions (no training here)."""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from evaluation.baselines import write_baseline
from evaluation.report import build_report, run_report
from evaluation.report_groups import best_worst, format_seconds, is_ni_test_split
from evaluation.report_render import to_html, to_markdown
from launcher.sweep import load_sweep
from ni.synthetic import generate
from tests.conftest import REPO


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("firsthour") / "data")


def make_run(path: Path, data: Path | None, baseline: str, varied: dict, wall: float = 95.0,
             source: Path | None = None) -> None:
    path.mkdir(parents=True)
    cfg = {"data": {"root": None if data is None else str(data), "track": "default"}, "seed": varied.get("seed", 42)}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "status.json").write_bytes(orjson.dumps({"state": "completed", "wall_seconds": wall, "device": "cpu"}))
    write_baseline(baseline, source or data, "default", path / "predicted_examples.jsonl")  # type: ignore[arg-type]
    (path / "DONE").write_text("done\n")


def make_sweep(root: Path, data: Path | None, runs: dict[str, tuple[str, dict]], source: Path | None = None) -> Path:
    for rid, (baseline, varied) in runs.items():
        make_run(root / rid, data, baseline, varied, source=source)
    manifest = {"sweep": root.name, "runs": {rid: {"varied": v, "backend": "local", "jobs": []}
                                             for rid, (_, v) in runs.items()}}
    (root / "manifest.json").write_bytes(orjson.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def seeded(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train_encoding a: seed 1 copies the demo, seed 2 the input; b: both seeds copy the demo."""
    return make_sweep(tmp_path_factory.mktemp("runs") / "seeded", data_root, {
        "a1": ("copy_demo", {"data.train_encoding": "a", "seed": 1}),
        "a2": ("copy_input", {"data.train_encoding": "a", "seed": 2}),
        "b1": ("copy_demo", {"data.train_encoding": "b", "seed": 1}),
        "b2": ("copy_demo", {"data.train_encoding": "b", "seed": 2}),
    })


def test_seeds_are_replicates_mean_std_n_and_a_pooled_interval(seeded: Path) -> None:
    report = build_report([seeded], baselines=False)
    assert report["config_axes"] == ["data.train_encoding"] and report["replicate_axes"] == ["seed"]
    rows = {r["run"]: r for r in report["rows"]}
    assert len(rows) == 4  # the per-seed rows stay
    a, b = report["groups"]
    assert (a["name"], b["name"]) == ("train_encoding=a", "train_encoding=b")
    assert a["n"] == b["n"] == 2 and a["runs"] == ["a1", "a2"] and a["replicates"] == [{"seed": 1}, {"seed": 2}]
    assert a["rougeL"] == round(statistics.fmean([rows["a1"]["rougeL"], rows["a2"]["rougeL"]]), 4)
    assert a["rougeL_std"] == round(statistics.stdev([rows["a1"]["rougeL"], rows["a2"]["rougeL"]]), 4) > 0
    assert b["rougeL"] == rows["b1"]["rougeL"] and b["rougeL_std"] == 0.0
    # two identical replicates pooled per task resample like one run: the same interval
    assert b["ci"]["rougeL"] == rows["b1"]["ci"]["rougeL"]
    lo, hi = a["ci"]["rougeL"]
    assert lo <= a["rougeL"] <= hi
    assert a["per_task"] == {t: round((rows["a1"]["per_task"][t] + rows["a2"]["per_task"][t]) / 2, 4)
                             for t in rows["a1"]["per_task"]}
    # the best two configurations compared on tasks pooled over seeds; no pivot has seed as an axis
    assert {report["comparison"]["a"], report["comparison"]["b"]} == {"train_encoding=a", "train_encoding=b"}
    assert all("seed" not in str(p) for p in report["pivots"])


def test_any_axis_can_be_a_replicate_and_curves_show_the_spread(data_root: Path, tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "curve", data_root, {
        f"n{n}s{s}": ("copy_demo" if s == 1 else "copy_input", {"data.max_instances_per_task": n, "data.order": s})
        for n in (8, 64) for s in (1, 2)
    })
    plain = build_report([sweep], baselines=False)
    assert len(plain["groups"]) == 4 and [p["kind"] for p in plain["pivots"]] == ["matrix"]  # two axes: no curve
    report = build_report([sweep], baselines=False, replicate_axes=["seed", "data.order"])
    from evaluation.cli import main as evaluation_main

    assert evaluation_main(["report", str(sweep), "--out", str(tmp_path / "rep"), "--format", "json",
                            "--no-baselines", "--replicates", "seed,data.order"]) == 0
    assert orjson.loads((tmp_path / "rep" / "report.json").read_bytes())["pivots"] == report["pivots"]
    (curve,) = report["pivots"]
    assert curve["kind"] == "curve" and curve["x"] == [8, 64] and curve["n"] == [2, 2]
    assert curve["std"][0] > 0 and curve["y"][0] == report["groups"][1]["rougeL"]  # 8 sorts before 64


def test_every_output_format_aggregates_and_keeps_the_seeds(seeded: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert run_report([seeded], out, echo=False) == 0
    groups = (out / "groups.csv").read_text().splitlines()
    assert len(groups) == 3 and groups[0].startswith("configuration,data.train_encoding,n,runs,rougeL_mean,rougeL_std")
    assert len((out / "runs.csv").read_text().splitlines()) == 5  # one row per seed
    report = orjson.loads((out / "report.json").read_bytes())
    assert len(report["groups"]) == 2 and len(report["rows"]) == 4
    md = (out / "report.md").read_text()
    assert "## Configurations (replicates aggregated)" in md and "## Runs (one per replicate)" in md
    assert "| train_encoding=a | a | 2 (1, 2) |" in md and " ± " in md
    page = (out / "report.html").read_text()
    assert page.count('data-group="') == 2 and 'data-n="2"' in page
    assert '<details id="per-run">' in page and page.count('data-run="') == 4
    assert (out / "categories.png").is_file() and (out / "configurations.png").is_file()


def test_baselines_use_the_runs_own_test_data_even_the_embedded_default(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TK_DATA_CACHE", str(tmp_path / "cache"))
    from ni.synthetic import ensure_default_data

    embedded = ensure_default_data()
    sweep = make_sweep(tmp_path / "embedded", None, {
        "r1": ("copy_demo", {"seed": 1}), "r2": ("copy_demo", {"seed": 2}),
    }, source=embedded)
    report = build_report([sweep], cache_dir=tmp_path / "rep")
    assert {(b["name"], b["data"]) for b in report["baselines"]} == {
        ("copy_demo", str(embedded)), ("copy_input", str(embedded))}
    (group,) = report["groups"]
    assert group["name"] == "all runs" and group["n"] == 2
    same = group["vs_baselines"]["copy_demo"]
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and not same["significant"]
    other = group["vs_baselines"]["copy_input"]
    copy_input = next(b["rougeL"] for b in report["baselines"] if b["name"] == "copy_input")
    assert abs(other["diff"] - (group["rougeL"] - copy_input)) < 1e-3 and other["tasks"] == len(report["tasks"])
    # synthetic test tasks: no published row, and the report says what the runs were tested on
    assert report["published"] == []
    (data,) = report["data"]
    assert data["embedded"] and data["root"] == str(embedded) and data["track"] == "default"
    assert data["tasks"] == len(report["tasks"]) and data["instances"] == [report["rows"][0]["num_examples"]]
    md = to_markdown(report)
    assert md.splitlines()[2].startswith(f"Tested on the embedded synthetic default data ({embedded}), track default: "
                                         f"{data['tasks']} test tasks, {data['instances'][0]} instances per run.")
    assert "(published)" not in md and "vs copy_demo" in md


def _ni_predictions(path: Path, names: list[str]) -> None:
    path.mkdir(parents=True)
    rows = [{"id": f"{t}-1", "Task": t, "Categories": ["Textual Entailment"], "Instance": {"output": ["yes"]},
             "prediction": "yes" if i % 2 else "no"} for i, t in enumerate(names)]
    (path / "predicted_examples.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def test_published_numbers_only_for_the_real_ni_test_split(tmp_path: Path) -> None:
    names = [f"task{1000 + i}_some_real_task" for i in range(119)]
    assert is_ni_test_split(names, "default") and not is_ni_test_split(names[:118], "default")
    assert not is_ni_test_split(names, "xlingual") and is_ni_test_split(names[:35], "xlingual")
    assert not is_ni_test_split([n.replace("some", "synthetic") + "_synthetic_x" for n in names], "default")
    _ni_predictions(tmp_path / "full" / "run", names)
    _ni_predictions(tmp_path / "part" / "run", names[:13])
    full = build_report([tmp_path / "full"], baselines=False)
    assert full["data"][0]["ni_test_split"] and full["published"]
    assert {"name": "Tk-Instruct 11B", "track": "default", "rougeL": 60.07,
            "source": "published (reference.md §7)"} in full["published"]
    assert "Tk-Instruct 11B (published)" in to_markdown(full) and 'class="pub"' in to_html(full, {})
    assert build_report([tmp_path / "part"], baselines=False)["published"] == []


@pytest.mark.parametrize(("n", "shown"), [(0, 0), (1, 0), (3, 1), (4, 2), (6, 3), (12, 3)])
def test_best_and_worst_never_share_a_task(n: int, shown: int) -> None:
    bw = best_worst({f"t{i}": float(i % 5) for i in range(n)})
    best, worst = {t for t, _ in bw["best"]}, {t for t, _ in bw["worst"]}
    assert len(best) == len(worst) == shown and not best & worst


def test_wall_time_in_the_unit_that_fits() -> None:
    assert [format_seconds(s) for s in (None, 3.2, 95.0, 600.0, 7199.0, 9000.0)] == [
        "", "3 s", "95 s", "10.0 min", "120.0 min", "2.50 h"]


def test_debug_sweep_is_two_encodings_by_three_seeds() -> None:
    sweep = load_sweep(REPO / "sweeps" / "debug.yaml")
    assert sorted({r.config.data.train_encoding for r in sweep.runs}) == ["instruct_input", "instruct_pos_2_input"]
    assert sorted(r.config.seed for r in sweep.runs) == [1, 1, 2, 2, 3, 3]
    assert all(r.config.model.name_or_path == "tiny" and r.config.data.root is None for r in sweep.runs)
    assert all(r.resources.gpus == 0 for r in sweep.runs)


def test_gpu_debug_sweep_plans_one_bf16_gpu_run_per_encoding_on_the_users_data(tmp_path: Path) -> None:
    sweep = load_sweep(REPO / "sweeps" / "debug-gpu.yaml", ["data.root=/data/ni"])
    assert len(sweep.runs) == 2
    for run in sweep.runs:
        cfg = run.config
        assert cfg.model.name_or_path in ("google/t5-small-lm-adapt", "google/flan-t5-small")
        assert cfg.precision == "bf16" and cfg.deepspeed.stage == 0 and cfg.data.root == "/data/ni"
        assert cfg.data.task_limit is not None and cfg.data.task_limit <= 50  # a handful of real tasks
        assert run.resources.gpus == 1 and run.resources.nodes == 1 and cfg.world_size == 1
    for backend, expect in (("local", "-m trainer run --config"), ("slurm", "#SBATCH --gpus-per-node=1")):
        r = subprocess.run([sys.executable, "-m", "launcher", "plan", "sweeps/debug-gpu.yaml", "--backend", backend,
                            "--render", "--runs-root", str(tmp_path / backend), "--set", "data.root=/data/ni"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert expect in r.stdout and "debug-gpu: 2 runs" in r.stdout
    assert not (tmp_path / "local").exists()  # a plan writes nothing


def test_local_live_view_and_status_tables_start_on_their_own_line(tmp_path: Path) -> None:
    from rich.console import Console

    from launcher.cli import _LiveView
    from launcher.manifest import Manifest

    sweep = load_sweep(REPO / "sweeps" / "debug.yaml")
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(_LiveView(sweep, Manifest(tmp_path, sweep)).render())
    lines = console.export_text().splitlines()
    assert lines[0] == "debug: local runs" and lines[1].startswith("┏")
    r = subprocess.run([sys.executable, "-m", "launcher", "status", "sweeps/debug.yaml", "--runs-root", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "debug: status", r.stdout[:300]
