"""The prompted API baseline against a small OpenAI-compatible HTTP server started here on 127.0.0.1
(tests/api_fake.py: deterministic answers, injected 429s and 500s); no mocked client objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from evaluation.api_baseline import ENCODING, ApiSettings, postprocess, write_api_baseline
from evaluation.cli import main as evaluation_main
from evaluation.predictions import read_predictions
from ni.data import require_split
from ni.encoding import PromptEncoder
from ni.errors import ConfigError
from ni.synthetic import generate
from tests.api_fake import FakeOpenAI, answer, serving

KEY = "sk-test-secret-123"
CAP = 5  # instances per test task


@pytest.fixture()
def server() -> Iterator[FakeOpenAI]:
    with serving() as fake:
        yield fake



@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("api") / "data")


def settings(url: str, endpoint: str = "chat") -> ApiSettings:
    return ApiSettings(url, "fake-model", "TK_TEST_API_KEY", endpoint, concurrency=3, max_retries=5, backoff=0.01)


def expected(data_root: Path) -> dict[str, str]:
    data = require_split(data_root, "default", "test", max_instances_per_task=CAP)
    enc = PromptEncoder(ENCODING)
    return {i.id: postprocess(answer(enc.source(t, i))) for t, insts in zip(data.tasks, data.instances, strict=True)
            for i in insts}


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_api_baseline_retries_caches_and_writes_the_original_format(
    server: FakeOpenAI, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    monkeypatch.setenv("TK_TEST_API_KEY", KEY)
    out = tmp_path / "api" / "predicted_examples.jsonl"
    n = write_api_baseline(settings(server.url, endpoint), data_root, "default", out,
                           max_instances_per_task=CAP, progress=False)
    want = expected(data_root)
    assert n == len(want) == 4 * CAP
    preds = read_predictions(out)
    assert {p.id: p.prediction for p in preds} == want
    assert all(p.prediction.startswith("answer ") and "." not in p.prediction for p in preds)
    row = orjson.loads(out.read_bytes().split(b"\n")[0])
    assert {"Task", "Definition", "Categories", "Positive Examples", "Instance", "id", "prediction"} <= set(row)
    # retries happened and the request count is bounded: one success per prompt + the injected failures
    assert server.failures > 0 and server.requests == len(want) + server.failures
    assert server.max_in_flight <= 3 and server.auth == {f"Bearer {KEY}"}
    body = server.bodies[0]
    assert body["temperature"] == 0 and body["max_tokens"] == 128 and body["model"] == "fake-model"
    # the key is written nowhere
    for f in out.parent.iterdir():
        assert KEY not in f.read_text()
    # a re-run is served from the cache: no request at all
    before = server.requests
    write_api_baseline(settings(server.url, endpoint), data_root, "default", out, max_instances_per_task=CAP,
                       progress=False)
    assert server.requests == before


def test_interrupted_run_resumes_without_paying_twice(server: FakeOpenAI, data_root: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TK_TEST_API_KEY", KEY)
    server.fail = False
    out = tmp_path / "p.jsonl"
    cache = tmp_path / "p.jsonl.cache.jsonl"
    write_api_baseline(settings(server.url), data_root, "default", out, max_instances_per_task=CAP, progress=False)
    lines = cache.read_bytes().split(b"\n")
    total = server.requests
    # keep 7 answers and half of the 8th (an interruption mid-write), lose the rest
    cache.write_bytes(b"\n".join(lines[:7]) + b"\n" + lines[7][:15])
    out.unlink()
    write_api_baseline(settings(server.url), data_root, "default", out, max_instances_per_task=CAP, progress=False)
    assert server.requests - total == total - 7
    assert {p.id: p.prediction for p in read_predictions(out)} == expected(data_root)


def test_cli_needs_the_key_and_never_prints_it(server: FakeOpenAI, data_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TK_TEST_API_KEY", raising=False)
    args = ["baseline", "api", "--data", str(data_root), "--base-url", server.url, "--model", "fake-model",
            "--api-key-env", "TK_TEST_API_KEY", "--max-instances-per-eval-task", "2", "--out", str(tmp_path / "o.jsonl")]
    assert evaluation_main(args) == 2
    assert "TK_TEST_API_KEY: not set" in capsys.readouterr().err
    monkeypatch.setenv("TK_TEST_API_KEY", KEY)
    assert evaluation_main(args) == 0
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err and (tmp_path / "o.jsonl").is_file()
    with pytest.raises(ConfigError):
        from evaluation.api_baseline import _api_key

        _api_key(ApiSettings(server.url, "m", "TK_TEST_UNSET_VARIABLE"))
