"""`python -m evaluation`: baselines + scoring against ../shared/golden, bad input, the real subprocess entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from evaluation.cli import main
from evaluation.metrics import aggregate, score_examples
from evaluation.predictions import read_predictions
from tests.conftest import REPO

SHARED = Path(os.environ.get("TK_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="module")
def ni_root() -> Path:
    root = SHARED / "ni-sample"
    if not (root / "tasks").is_dir():
        pytest.skip(f"real NI sample not found at {root} (set TK_SHARED to the shared/ directory)")
    return root


@pytest.fixture(scope="module")
def golden_metrics() -> dict[str, Any]:
    path = SHARED / "golden" / "heuristic-metrics.json"
    if not path.is_file():
        pytest.skip(f"golden metrics not found at {path} (set TK_SHARED to the shared/ directory)")
    return orjson.loads(path.read_bytes())


def run_main(args: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def row(i: int, prediction: Any = "a", output: Any = None, **extra: Any) -> dict[str, Any]:
    r = {
        "id": f"task1-{i}",
        "Task": "task1_demo",
        "Categories": ["Textual Entailment"],
        "Instance": {"id": f"task1-{i}", "input": "x", "output": ["a"] if output is None else output},
        "prediction": prediction,
    }
    r.update(extra)
    return r


# ---------------------------------------------------------------------------------------------------------------
# Golden: both baselines on the default track of the real NI sample


@pytest.mark.golden
@pytest.mark.parametrize("baseline", ["copy_demo", "copy_input"])
def test_baseline_metrics_match_golden(
    baseline: str, ni_root: Path, golden_metrics: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = tmp_path / f"{baseline}.jsonl"
    metrics = tmp_path / "metrics.json"
    rc, out, err = run_main(["baseline", baseline, "--data", ni_root, "--track", "default", "--out", preds], capsys)
    assert rc == 0, err
    rc, out, err = run_main(["score", preds, "--out", metrics], capsys)
    assert rc == 0, err
    assert "overall" in out and "question_answering" in out
    got = orjson.loads(metrics.read_bytes())
    want = golden_metrics[baseline]
    assert got["num_examples"] == want["num_examples"]
    assert got["track"] == "default"
    for section in ("overall", "per_task", "per_category"):
        assert set(got[section]) == set(want[section]), section
        for key, value in want[section].items():
            assert round(got[section][key], 4) == round(value, 4), f"{section}.{key}"
    assert got["headline"] == {
        k: v for k, v in got["per_category"].items() if k.startswith("exact_match_for_c")
    }  # cause_effect_classification, coreference_resolution: exact match is their headline metric


def test_baseline_rows_have_the_original_prediction_format(ni_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    assert main(["baseline", "copy_demo", "--data", str(ni_root), "--max-instances-per-eval-task", "3", "--out", str(out)]) == 0
    rows = read_lines(out)
    tasks = {r["Task"] for r in rows}
    assert len(rows) == 3 * len(tasks)
    first = rows[0]
    for key in ("id", "Task", "Definition", "Categories", "Positive Examples", "Negative Examples", "Instance", "prediction"):
        assert key in first
    assert set(first["Instance"]) == {"id", "input", "output"}
    assert first["id"] == first["Instance"]["id"]
    assert first["prediction"] == first["Positive Examples"][0]["output"]
    assert isinstance(first["Definition"], list)


def test_categories_come_from_task_files_when_lines_lack_them(
    ni_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = tmp_path / "p.jsonl"
    assert main(["baseline", "copy_input", "--data", str(ni_root), "--max-instances-per-eval-task", "5", "--out", str(preds)]) == 0
    with_cats = tmp_path / "a.json"
    assert main(["score", str(preds), "--out", str(with_cats)]) == 0
    # The minimal format: only the four required fields.
    bare = write_lines(
        tmp_path / "bare.jsonl",
        [{k: r[k] for k in ("id", "Task", "Instance", "prediction")} for r in read_lines(preds)],
    )
    without = tmp_path / "b.json"
    assert main(["score", str(bare), "--data", str(ni_root), "--out", str(without)]) == 0
    assert orjson.loads(with_cats.read_bytes()) == orjson.loads(without.read_bytes())
    capsys.readouterr()
    rc, _, err = run_main(["score", bare, "--out", tmp_path / "c.json"], capsys)
    assert rc == 2
    assert err.startswith(f"error: {bare}:1: field 'Categories': missing")
    assert "--data" in err and err.count("\n") == 1
    assert not (tmp_path / "c.json").exists()


def test_categories_from_a_data_root_follow_renames_and_fail_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = tmp_path / "data" / "tasks"
    tasks.mkdir(parents=True)
    task = {"Definition": ["d"], "Positive Examples": [], "Instances": [], "Categories": ["Question Rewriting"]}
    (tasks / "task121_atomic_question_rewriting.json").write_bytes(orjson.dumps(task))
    (tasks / "task2_nocat.json").write_bytes(orjson.dumps({**task, "Categories": []}))

    def bare(task_name: str) -> dict[str, Any]:
        return {k: v for k, v in row(0, Task=task_name).items() if k != "Categories"}

    out = tmp_path / "m.json"
    for name in ("task121_atomic_question_rewriting", "task121_zest_question_rewriting"):
        preds = write_lines(tmp_path / "p.jsonl", [bare(name)])
        rc, _, err = run_main(["score", preds, "--data", tmp_path / "data", "--out", out], capsys)
        assert rc == 0, err
        got = orjson.loads(out.read_bytes())
        assert got["headline"] == {"rougeL_for_question_rewriting": 100.0}
        assert list(got["per_task"])[0].endswith("_for_task121_zest_question_rewriting")
    out.unlink()
    for name, message in [("task2_nocat", "task2_nocat.json: field 'Categories': missing or empty"),
                          ("task3_none", "task3_none.json: task file not found")]:
        preds = write_lines(tmp_path / "p.jsonl", [bare(name)])
        rc, _, err = run_main(["score", preds, "--data", tmp_path / "data", "--out", out], capsys)
        assert rc == 2 and message in err and err.count("\n") == 1
        assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# Cross-lingual track through the CLI, with a local stand-in tokenizer directory


def test_xlingual_score_with_local_tokenizer_directory(
    ni_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_metrics import original_compute_metrics, train_byte_bpe

    tok = train_byte_bpe()
    tok.save_pretrained(tmp_path / "tok")
    preds = tmp_path / "x.jsonl"
    metrics = tmp_path / "x.json"
    assert main(["baseline", "copy_demo", "--data", str(ni_root), "--track", "xlingual", "--out", str(preds)]) == 0
    rc, _, err = run_main(
        ["score", preds, "--track", "xlingual", "--xlingual-tokenizer", tmp_path / "tok", "--out", metrics], capsys
    )
    assert rc == 0, err
    got = orjson.loads(metrics.read_bytes())
    assert got["track"] == "xlingual"
    rows = read_predictions(preds)
    want = original_compute_metrics([r.prediction for r in rows], [list(r.references) for r in rows], tok)
    assert got["overall"] == want
    assert got["num_examples"] == len(rows)


def test_xlingual_without_a_loadable_tokenizer_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = write_lines(tmp_path / "p.jsonl", [row(0)])
    out = tmp_path / "m.json"
    rc, _, err = run_main(
        ["score", preds, "--track", "xlingual", "--xlingual-tokenizer", tmp_path / "missing", "--out", out], capsys
    )
    assert rc == 2
    assert err.startswith("error: xlingual tokenizer") and err.count("\n") == 1
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# Reading the original's files; bad input


def test_scalar_outputs_and_predictions_are_coerced_to_text(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [row(0, prediction=3, output=[3, "three"]), row(1, prediction=None)])
    preds = read_predictions(path)
    assert preds[0].prediction == "3" and preds[0].references == ("3", "three")
    assert preds[1].prediction == ""
    assert aggregate(score_examples([p.prediction for p in preds], [p.references for p in preds]))["exact_match"] == 50.0


def test_the_fast_path_of_a_line_reads_what_the_checked_path_reads() -> None:
    from evaluation.predictions import _parse_checked, parse_line

    lines = [row(0), row(1, output=["a", "b", "c"]), row(2, Categories=[]), row(3, Categories=None),
             row(4, Categories="Title Generation"), row(5, Categories=[7]), row(6, output=["a", 3]), row(7, prediction=3),
             row(8, id=5), {k: v for k, v in row(9).items() if k != "Categories"}]
    for i, raw in enumerate(lines, 1):
        assert parse_line(Path("p"), i, raw) == _parse_checked(Path("p"), i, raw)


BAD_INPUTS: list[tuple[str, list[Any] | bytes, str]] = [
    ("invalid-json", b'{"id": "a", "Task": "t"\n', ":1: invalid JSON"),
    ("not-an-object", [row(0), [1, 2]], ":2: expected a JSON object, got list"),
    ("missing-field", [row(0), {k: v for k, v in row(1).items() if k != "prediction"}], ":2: field 'prediction': missing"),
    ("missing-output", [row(0, Instance={"id": "x", "input": "y"})], ":1: field 'Instance.output': missing"),
    ("refs-not-list", [row(0, output="a")], ":1: field 'Instance.output': references must be a list, got str"),
    ("empty-refs", [row(0, output=[])], ":1: field 'Instance.output': empty list of references"),
    ("bad-prediction", [row(0, prediction={"text": "a"})], ":1: field 'prediction': expected text, got dict"),
    ("duplicate-id", [row(0), row(1), row(0)], ":3: field 'id': duplicate id 'task1-0' (first on line 1)"),
    ("missing-categories", [{k: v for k, v in row(0).items() if k != "Categories"}], ":1: field 'Categories': missing"),
]


@pytest.mark.parametrize("content,message", [(c, m) for _, c, m in BAD_INPUTS], ids=[n for n, _, _ in BAD_INPUTS])
def test_bad_predictions_file_is_one_line_error_and_writes_nothing(
    content: list[Any] | bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "preds.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_lines(path, content)
    out = tmp_path / "metrics.json"
    rc, stdout, err = run_main(["score", path, "--out", out], capsys)
    assert rc == 2
    assert err.startswith(f"error: {path}{message}"), err
    assert err.count("\n") == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]  # no temp file left either


def test_missing_predictions_file_and_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_main(["score", tmp_path / "none.jsonl", "--out", tmp_path / "m.json"], capsys)
    assert rc == 2 and err == f"error: {tmp_path / 'none.jsonl'}: predictions file not found\n"
    rc, _, err = run_main(["baseline", "copy_demo", "--data", tmp_path / "nodata", "--out", tmp_path / "p.jsonl"], capsys)
    assert rc == 2 and err.startswith(f"error: {tmp_path / 'nodata'}: data root not found")
    assert sorted(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "metrics.json"
    out.write_text("old")
    bad = write_lines(tmp_path / "p.jsonl", [row(0), row(0)])
    rc, _, _ = run_main(["score", bad, "--out", out], capsys)
    assert rc == 2 and out.read_text() == "old"


# ---------------------------------------------------------------------------------------------------------------
# The real entry point


def test_cli_runs_as_a_module_in_a_subprocess(tmp_path: Path) -> None:
    preds = write_lines(tmp_path / "p.jsonl", [row(0, prediction="A"), row(1, prediction="b", output=["a", "c"])])
    out = tmp_path / "m.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "evaluation", "score", str(preds), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "textual_entailment" in proc.stdout and "50.0000*" in proc.stdout
    got = orjson.loads(out.read_bytes())
    assert got["overall"] == {"exact_match": 50.0, "rouge1": 50.0, "rougeL": 50.0}
    assert got["headline"] == {"exact_match_for_textual_entailment": 50.0}
    assert got["num_examples"] == 2
    assert got["per_task"]["rougeL_for_task1_demo"] == 50.0

    bad = write_lines(tmp_path / "bad.jsonl", [row(0), row(0)])
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation", "score", str(bad), "--out", str(tmp_path / "n.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "n.json").exists()
