"""`python -m trainer demo` driven as a person would (a pseudo-terminal) and with --once; `python -m trainer export`
of a tiny trained run: it reloads and reproduces the run's predictions exactly, its card's metrics match
metrics.json, bad input fails in one line without leaving anything behind.

--push-to-hub is exercised against the real `huggingface_hub` client in its offline mode (HF_HUB_OFFLINE=1: the
upload is attempted and refused before any network; the token must appear nowhere), and against a recording
stand-in for `HfApi`. A real upload runs only when TK_HUB_TEST_REPO and HF_TOKEN are set (opt-in).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.conftest import REPO, small_run, write_config

DEFINITION = "Return the currency of the given country."
EXAMPLES = [{"input": "Japan", "output": "Yen"}, {"input": "France", "output": "Euro"}]
REQUEST: dict[str, Any] = {"definition": DEFINITION, "positive_examples": EXAMPLES, "input": "India"}
TOKEN = "hf_test_secret_do_not_write_3141592653"


def trainer(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=REPO, capture_output=True, text=True,
                          input=stdin, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, embedded: Path) -> Path:
    """A tiny run trained for a few steps with its final model saved (checkpointed at the end, too).

    A few steps of training teach the tiny T5 to answer with an empty string at once, which would make
    "reproduces its predictions" vacuous: its weights get seeded noise first, and a small learning rate keeps its
    greedy answers long, varied and sensitive to every weight."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp("trained")
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model)
    g = torch.Generator().manual_seed(2)  # a seed whose noisy model answers every test prompt of the v2 data
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * 0.5)
    model.save_pretrained(tmp / "noisy")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp / "noisy")
    cfg = write_config(tmp / "r.yaml", **small_run(tmp, tmp / "noisy", embedded,
                                                   **{"optim.max_steps": 8, "optim.lr": 1e-4}))
    r = trainer("run", "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    preds = predictions(tmp / "run")
    assert all(preds) and len(set(preds)) > 1, preds
    return tmp / "run"


def predictions(run: Path) -> list[str]:
    return [orjson.loads(x)["prediction"] for x in (run / "predicted_examples.jsonl").read_bytes().splitlines()]


def no_temp_leftovers(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))]


# --- export -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_reloads_and_reproduces_the_runs_predictions(trained: Path, embedded: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from trainer.export import card_metrics

    out = tmp_path / "exported"
    r = trainer("export", str(trained), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json", "run_config.yaml"):
        assert (out / name).is_file(), name
    assert no_temp_leftovers(tmp_path) == []
    AutoModelForSeq2SeqLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)

    card = (out / "README.md").read_text()
    metrics = orjson.loads((trained / "metrics.json").read_bytes())
    assert card_metrics(card) == {k: round(v, 2) for k, v in metrics["overall"].items()}
    assert f"{metrics['num_examples']} test examples" in card
    config_block = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config_block) == yaml.safe_load((trained / "config.yaml").read_text())
    assert "track: `default`" in card and "test encoding: `instruct_pos_2_input`" in card
    assert card.startswith("---\nlibrary_name: transformers\n")

    # the exported folder, as a predict-only run, reproduces the run's predictions exactly
    cfg = write_config(tmp_path / "p.yaml", **small_run(tmp_path / "p", out, embedded, do_train="false"))
    r = trainer("run", "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert predictions(tmp_path / "p" / "run") == predictions(trained)
    assert orjson.loads((tmp_path / "p" / "run" / "metrics.json").read_bytes())["overall"] == metrics["overall"]


def test_card_metrics_table() -> None:
    from trainer.config import validate_config
    from trainer.export import card_metrics, model_card

    metrics = {"overall": {"exact_match": 41.5, "rouge1": 60.126, "rougeL": 58.333}, "num_examples": 20,
               "per_category": {"exact_match_for_title_generation": 10.0, "rougeL_for_title_generation": 33.3,
                                "rouge1_for_title_generation": 35.0}, "track": "default"}
    cfg = validate_config({"model": {"name_or_path": "google/t5-base-lm-adapt"}}, "x")
    card = model_card(cfg, Path("runs/s/abc"), metrics, "model/", "me/tk")
    assert card_metrics(card) == {"exact_match": 41.5, "rouge1": 60.13, "rougeL": 58.33}
    assert "| title_generation | 10.00 | 35.00 | 33.30 |" in card
    assert "base_model: google/t5-base-lm-adapt" in card and "from_pretrained('me/tk')" in card


@pytest.mark.slow
def test_export_falls_back_to_the_newest_checkpoint(trained: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from trainer.export import export

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    shutil.rmtree(run / "model")
    out = export(run, tmp_path / "from-ckpt")
    assert "weights from checkpoint step-000000008" in (out / "README.md").read_text()
    got, want = load_file(str(out / "model.safetensors")), load_file(str(trained / "model" / "model.safetensors"))
    assert got.keys() == want.keys() and all(bool((got[k] == want[k]).all()) for k in want)


@pytest.mark.slow
def test_export_bad_input_is_one_line_and_writes_nothing(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "notarun").mkdir()
    cases = [(tmp_path / "nowhere", "no such run directory"), (tmp_path / "notarun", "not a run directory")]
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained, unfinished, ignore=shutil.ignore_patterns("model", "checkpoints"))
    (unfinished / "DONE").unlink()
    (unfinished / "status.json").write_bytes(orjson.dumps({"state": "preempted"}))
    cases.append((unfinished, "not completed (state: preempted"))
    for run_dir, message in cases:
        r = trainer("export", str(run_dir), "--out", str(out))
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = trainer("export", str(trained), "--out", str(out))
    assert r.returncode == 2 and "exists and is not empty" in r.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and no_temp_leftovers(tmp_path) == []


@pytest.mark.slow
def test_push_to_hub_offline_and_token_never_written(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "pushed"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "trainer", "export", str(trained), "--out", str(out),
                        "--push-to-hub", "someone/tk-tiny"], cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "HF_TOKEN" in r.stderr and not out.exists()  # nothing written without a token

    # the real client, offline: the export completes, the upload is refused, the token is nowhere
    r = trainer("export", str(trained), "--out", str(out), "--push-to-hub", "someone/tk-tiny",
                env={"HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "push to the Hub repo 'someone/tk-tiny' failed: OfflineModeIsEnabled" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (out / "model.safetensors").is_file()
    assert TOKEN not in r.stdout + r.stderr
    for f in out.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f


def test_push_to_hub_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.export import push_to_hub

    calls: list[tuple[str, dict[str, Any]]] = []

    class RecordingApi:
        def create_repo(self, **kw: Any) -> None:
            calls.append(("create_repo", kw))

        def upload_folder(self, **kw: Any) -> Any:
            calls.append(("upload_folder", kw))
            return type("CommitInfo", (), {"commit_url": "https://huggingface.co/someone/x/commit/abc"})()

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    url = push_to_hub(tmp_path, "someone/x", private=True, api=RecordingApi())
    assert url.endswith("/commit/abc")
    assert calls[0] == ("create_repo", {"repo_id": "someone/x", "repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][0] == "upload_folder" and calls[1][1]["folder_path"] == str(tmp_path)
    assert calls[1][1]["repo_id"] == "someone/x"


def test_a_failed_push_is_its_own_error_in_one_line_without_the_token(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ni.errors import ConfigError
    from trainer.export import HubPushError, push_to_hub

    class Refusing:
        def create_repo(self, **kw: Any) -> None:
            raise PermissionError(f"401 Unauthorized for token {TOKEN}\nmore detail")

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(HubPushError) as e:
        push_to_hub(tmp_path, "someone/x", api=Refusing())
    assert not isinstance(e.value, ConfigError)  # the settings were fine: the Hub refused
    assert str(e.value) == (f"push to the Hub repo 'someone/x' failed: PermissionError: 401 Unauthorized for token *** "
                            f"The export itself is complete in {tmp_path}.")


@pytest.mark.skipif(not (os.environ.get("TK_HUB_TEST_REPO") and os.environ.get("HF_TOKEN")),
                    reason="opt-in: set TK_HUB_TEST_REPO (a scratch repo) and HF_TOKEN to upload for real")
@pytest.mark.slow
def test_push_to_hub_for_real(trained: Path, tmp_path: Path) -> None:  # pragma: no cover - needs the Hub
    from transformers import AutoModelForSeq2SeqLM

    repo = os.environ["TK_HUB_TEST_REPO"]
    r = trainer("export", str(trained), "--out", str(tmp_path / "o"), "--push-to-hub", repo, "--private")
    assert r.returncode == 0, r.stderr
    AutoModelForSeq2SeqLM.from_pretrained(repo, token=os.environ["HF_TOKEN"])


# --- demo -----------------------------------------------------------------------------------------------------------


def expected_prompt() -> str:
    from ni.data import Example, Instance, Task
    from ni.encoding import PromptEncoder

    inst = Instance("x", "India", ())
    task = Task("t", DEFINITION, [Example(e["input"], e["output"]) for e in EXAMPLES], [], [inst])
    return PromptEncoder("instruct_pos_2_input").source(task, inst)


@pytest.mark.slow
def test_demo_once_json_in_json_out(trained: Path) -> None:
    from trainer.demo import Demo, Request

    model = str(trained / "model")
    r = trainer("demo", "--model", model, "--once", stdin=orjson.dumps(REQUEST).decode())
    assert r.returncode == 0, r.stderr[-2000:]
    got = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert set(got) == {"prompt", "prediction"}
    assert got["prompt"] == expected_prompt()
    assert got["prompt"].endswith("Now complete the following example -\nInput: India.\nOutput: ")
    assert (got["prompt"], got["prediction"]) == Demo(model, "instruct_pos_2_input").answer(Request.from_json(REQUEST))

    r = trainer("demo", "--model", model, "--once", stdin="{not json")
    assert r.returncode == 2 and "stdin: not JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = trainer("demo", "--model", model, "--once", stdin='{"definition": "d"}')
    assert r.returncode == 2 and "'input' is missing" in r.stderr


class Terminal:
    """A child process on a pseudo-terminal: type lines, wait for text on the screen."""

    def __init__(self, argv: list[str]):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     env={**os.environ, "TERM": "dumb", "COLUMNS": "120"}, close_fds=True)
        os.close(slave)
        self.screen = ""
        self.pos = 0  # what was already matched: each wait looks for text that came after it

    def read_until(self, text: str, timeout: float = 120) -> str:
        """Wait for `text` after the previous match; returns the screen from there to the end of `text`."""
        deadline = time.time() + timeout
        while text not in self.screen[self.pos:]:
            if time.time() > deadline:
                raise AssertionError(f"{text!r} did not appear; the screen:\n{self.screen[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.master, 65536).decode("utf-8", errors="replace")
                except OSError:  # the child closed the terminal
                    if text not in self.screen[self.pos:]:
                        raise AssertionError(f"{text!r} never appeared:\n{self.screen[-3000:]}") from None
        start = self.pos
        self.pos = self.screen.index(text, start) + len(text)
        return self.screen[start:self.pos]

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


@pytest.mark.slow
def test_demo_in_a_terminal(trained: Path) -> None:
    """Type a task, two examples and two inputs as a person would; the answers are the --once predictions."""
    model = str(trained / "model")
    once = orjson.loads(trainer("demo", "--model", model, "--once", stdin=orjson.dumps(REQUEST).decode())
                        .stdout.strip().splitlines()[-1])
    term = Terminal([sys.executable, "-m", "trainer", "demo", "--model", model, "--show-prompt"])
    try:
        term.read_until("Task definition (blank to quit): ")
        term.type(DEFINITION)
        for k, ex in enumerate(EXAMPLES, 1):
            term.read_until(f"Example {k} input (blank: no more examples): ")
            term.type(ex["input"])
            term.read_until(f"Example {k} output: ")
            term.type(ex["output"])
        term.read_until("Example 3 input (blank: no more examples): ")
        term.type("")
        term.read_until("Input (blank: new task): ")
        term.type("India")
        screen = term.read_until("Answer: ") + term.read_until("Input (blank: new task): ", timeout=60)
        shown = screen.split("--- prompt ---", 1)[1].split("--------------", 1)[0].replace("\r\n", "\n")
        assert shown.strip("\n") == once["prompt"].strip("\n")
        answer = screen.rsplit("Answer: ", 1)[1].split("\r\n", 1)[0]
        assert answer == once["prediction"]
        term.type("")  # a new task ...
        term.read_until("Task definition (blank to quit): ", timeout=30)
        term.type("")  # ... or none: quit
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
