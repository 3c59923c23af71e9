"""Prompt encodings: byte-identical to the original, and the fast length checks equal the original's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ni.data import Example, Instance, Task, require_split
from ni.encoding import NAMED_ENCODINGS, TK_INSTRUCT_MIXTURE, PromptEncoder, resolve_encoding
from ni.encoding_fallback import fallback_encode
from ni.errors import ConfigError
from tests.conftest import REPO


def golden_rows(golden: Path, track: str) -> list[dict]:
    return [json.loads(line) for line in (golden / f"prompts-{track}.jsonl").open()]


@pytest.mark.golden
@pytest.mark.parametrize("track", ["default", "xlingual"])
def test_sources_match_golden_byte_for_byte(ni_sample: Path, golden: Path, track: str) -> None:
    data = require_split(ni_sample, track, "test")
    by_id = {(t.name, i.id): (t, i) for t, i in data}
    rows = golden_rows(golden, track)
    assert {r["encoding"] for r in rows} == set(NAMED_ENCODINGS)
    encoders = {name: PromptEncoder(name) for name in NAMED_ENCODINGS}
    for row in rows:
        assert NAMED_ENCODINGS[row["encoding"]].to_dict() == row["settings"]
        task, inst = by_id[(row["task"], row["id"])]
        assert encoders[row["encoding"]].source(task, inst) == row["source"], (row["encoding"], row["id"])


@pytest.mark.golden
def test_golden_sources_with_a_generous_token_limit(ni_sample: Path, golden: Path, t5_like_tokenizer) -> None:
    """With a tokenizer and a limit nothing reaches, the token path produces the same text."""
    data = require_split(ni_sample, "default", "test")
    by_id = {(t.name, i.id): (t, i) for t, i in data}
    encoders = {n: PromptEncoder(n, t5_like_tokenizer, 100_000) for n in NAMED_ENCODINGS}
    for row in golden_rows(golden, "default")[::7]:
        task, inst = by_id[(row["task"], row["id"])]
        assert encoders[row["encoding"]].encode(task, inst).source == row["source"]


def test_mixture_picks_per_instance_and_reproducibly(ni_sample: Path) -> None:
    data = require_split(ni_sample, "default", "test")
    enc = PromptEncoder("tk_instruct", seed=7)
    picks = Counter(enc.choose(i) for _, i in data)
    assert set(picks) == set(TK_INSTRUCT_MIXTURE) and min(picks.values()) > 150
    again = PromptEncoder("tk_instruct", seed=7)
    pairs = list(data)[:200]
    assert [enc.source(t, i) for t, i in pairs] == [again.source(t, i) for t, i in pairs]
    single = {e: PromptEncoder(e) for e in TK_INSTRUCT_MIXTURE}
    for t, i in pairs:
        assert enc.source(t, i) == single[enc.choose(i)].source(t, i)
    assert [enc.choose(i) for _, i in pairs] != [PromptEncoder("tk_instruct", seed=8).choose(i) for _, i in pairs]


def test_unknown_encoding_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown encoding 'instruct_pos_3'.*instruct_pos_2_input"):
        resolve_encoding("instruct_pos_3")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        PromptEncoder("input_only", max_source_length=10)


@pytest.mark.parametrize("name", ["instruct_pos_2_input", "instruct_pos_2_neg_2_explanation_input", "tk_instruct"])
@pytest.mark.parametrize("limit", [24, 96, 256, 1024])
def test_fast_path_equals_reference_on_real_data(ni_sample: Path, t5_like_tokenizer, name: str, limit: int) -> None:
    data = require_split(ni_sample, "default", "test", max_instances_per_task=30)
    enc = PromptEncoder(name, t5_like_tokenizer, limit)
    assert enc.fast
    pairs = list(data)
    got = enc.encode_many(pairs)
    want = [fallback_encode(t, i, enc.choose(i), t5_like_tokenizer, limit) for t, i in pairs]
    assert got == want
    assert all(len(e.input_ids or []) <= limit for e in got)
    if limit == 24:
        assert sum(e.truncated for e in got) > len(got) // 2


def test_byte_level_bpe_is_not_additive_and_uses_the_reference(ni_sample: Path, byte_bpe_tokenizer) -> None:
    """GPT-2-style pre-tokenization glues whitespace runs across piece joins ("\\n\\n" + "Now"), so the
    piece-sum shortcut would be wrong there: the encoder must notice and re-tokenize like the original."""
    data = require_split(ni_sample, "xlingual", "test", max_instances_per_task=40)
    for limit in (40, 200):
        enc = PromptEncoder("instruct_pos_2_neg_2_input", byte_bpe_tokenizer, limit)
        assert not enc.fast
        pairs = list(data)
        want = [fallback_encode(t, i, enc.choose(i), byte_bpe_tokenizer, limit) for t, i in pairs]
        assert enc.encode_many(pairs) == want


def non_additive_tokenizer(texts: list[str]):
    """Spaces become '▁' inside one pre-token, so a piece that starts with a space tokenizes differently alone."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=300, unk_token="<unk>",
                                                           special_tokens=["<unk>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", model_max_length=1 << 20)


def test_non_additive_tokenizer_falls_back_to_the_reference(ni_sample: Path) -> None:
    data = require_split(ni_sample, "default", "test", max_instances_per_task=5)
    pairs = list(data)
    texts = [t.definition for t in data.tasks] + [i.input for _, i in pairs]
    tok = non_additive_tokenizer(texts)
    enc = PromptEncoder("instruct_pos_2_input", tok, 120)
    assert not enc.fast
    assert enc.encode_many(pairs) == [fallback_encode(t, i, enc.choose(i), tok, 120) for t, i in pairs]


# --- property test: the truncation rule against the slow, obviously-correct version ---------------------

TEXT = st.lists(st.sampled_from([*"abc xyz.,!?-\n\t'é0123", "the ", "word ", "  "]), max_size=40).map("".join)
EXAMPLES = st.lists(st.builds(Example, TEXT, TEXT, st.one_of(st.none(), TEXT)), max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    definition=TEXT,
    pos=EXAMPLES,
    neg=EXAMPLES,
    text=TEXT,
    limit=st.integers(min_value=2, max_value=160),
    name=st.sampled_from([*NAMED_ENCODINGS, "tk_instruct"]),
)
def test_truncation_rule_property(t5_like_tokenizer, definition, pos, neg, text, limit, name) -> None:
    task = Task("task77_prop", definition, pos, neg, [])
    inst = Instance("task77-1", text, ("out",))
    enc = PromptEncoder(name, t5_like_tokenizer, limit)
    assert enc.fast
    assert enc.encode(task, inst) == fallback_encode(task, inst, enc.choose(inst), t5_like_tokenizer, limit)


# --- command line ---------------------------------------------------------------------------------------


def run_trainer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=REPO, capture_output=True, text=True)


def test_encode_cli_writes_the_contract(ni_sample: Path, golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    r = run_trainer("encode", "--data", str(ni_sample), "--track", "default", "--split", "test",
                    "--encoding", "pos_2_input", "--max-instances-per-eval-task", "20", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.open()]
    assert all(set(r) == {"id", "task", "source", "references"} for r in rows)
    assert len(rows) == 13 * 20
    order = [t.strip() for t in (ni_sample / "splits/default/test_tasks.txt").read_text().split()]
    assert list(dict.fromkeys(r["task"] for r in rows)) == order
    gold = {(g["task"], g["id"]): g["source"] for g in golden_rows(golden, "default") if g["encoding"] == "pos_2_input"}
    matched = [r for r in rows if (r["task"], r["id"]) in gold]
    assert matched and all(gold[(r["task"], r["id"])] == r["source"] for r in matched)


def test_encode_cli_with_tokenizer_truncates(ni_sample: Path, t5_like_tokenizer, tmp_path: Path) -> None:
    t5_like_tokenizer.save_pretrained(tmp_path / "tok")
    out = tmp_path / "p.jsonl"
    r = run_trainer("encode", "--data", str(ni_sample), "--encoding", "instruct_pos_4_input",
                    "--max-instances-per-eval-task", "3", "--max-source-length", "64",
                    "--tokenizer", str(tmp_path / "tok"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.open()]
    data = require_split(ni_sample, "default", "test", max_instances_per_task=3, seed=42)
    enc = NAMED_ENCODINGS["instruct_pos_4_input"]
    want = [fallback_encode(t, i, enc, t5_like_tokenizer, 64) for t, i in data]
    assert [r["source"] for r in rows] == [w.source for w in want]
    assert sum(w.truncated for w in want) > len(want) // 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--encoding", "nope"], "unknown encoding 'nope'"),
        (["--encoding", "input_only", "--max-source-length", "10"], "needs --tokenizer"),
        (["--encoding", "input_only", "--tokenizer", "/no/such/tokenizer"], "tokenizer '/no/such/tokenizer'"),
    ],
)
def test_encode_cli_bad_input(ni_sample: Path, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "p.jsonl"
    r = run_trainer("encode", "--data", str(ni_sample), "--out", str(out), *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []
