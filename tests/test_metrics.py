"""evaluation.metrics / rouge / overlap against the original Tk-Instruct metric code path (rouge-score 0.1.2)."""

from __future__ import annotations

import random
import string
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from evaluation import rouge
from evaluation.metrics import ExampleScores, aggregate, normalize_answer, score_examples
from evaluation.overlap import PairCaches, lcs_length, rouge1_f, rougel_f, score_pairs
from evaluation.rouge import DefaultTokenizer, RougeScorer, XlingualTokenizer
from evaluation.scoring import Scores, evaluate, flatten, group_key, split_group_key, summarize
from ni.errors import ConfigError

# ---------------------------------------------------------------------------------------------------------------
# The original's metric code path, written out here as the oracle: a new rouge-score scorer per pair and metric.


def original_normalize(s: str) -> str:
    exclude = set(string.punctuation)
    return " ".join("".join(ch for ch in s.lower() if ch not in exclude).split())


class OriginalGPTTokenizer:
    """The original's GPTTokenizer: `[t.lstrip("Ġ") for t in gpt_tokenizer.tokenize(s)]`."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def tokenize(self, s: str) -> list[str]:
        return [t.lstrip("Ġ") for t in self.tok.tokenize(s)]


def original_rouge(metric: str, prediction: str, target: str, xlingual_tok: Any = None) -> float:
    if xlingual_tok is not None:
        scorer = rouge_scorer.RougeScorer([metric], tokenizer=OriginalGPTTokenizer(xlingual_tok))
    else:
        scorer = rouge_scorer.RougeScorer([metric], use_stemmer=True)
    return scorer.score(prediction=prediction, target=target)[metric].fmeasure


def original_compute_metrics(preds: list[str], refs: list[list[str]], xlingual_tok: Any = None) -> dict[str, float]:
    em, r1, rl = 0, 0.0, 0.0  # the original started from int 0: same sums
    for pred, gold in zip(preds, refs, strict=True):
        em += max(original_normalize(pred) == original_normalize(g) for g in gold)
        r1 += max(original_rouge("rouge1", pred, g, xlingual_tok) for g in gold)
        rl += max(original_rouge("rougeL", pred, g, xlingual_tok) for g in gold)
    out = {"exact_match": 100.0 * em / len(refs), "rouge1": 100.0 * r1 / len(refs), "rougeL": 100.0 * rl / len(refs)}
    return {k: round(v, 4) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# A GPT-2-shaped byte-level BPE tokenizer trained here (no hub access): the xlingual stand-in.

_WORD_TEXT = (
    "the cat running runs ran dogs dog's Hello, world! 42 3.14 e-mail naïve "
    "și ține această întrebare românește Привет мир Москва 東京 日本語 テスト 中文 한국어 مرحبا שלום "
    "Ελληνικά ü ß ø — … “quoted” (paren) [x] {y}"
)
WORDS = _WORD_TEXT.split()


def training_lines(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    seps = [" ", " ", " ", "  ", "\n", " \t"]
    return ["".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(rng.randint(3, 15))) for _ in range(n)]


def train_byte_bpe(vocab_size: int = 600) -> Any:
    """A transformers fast tokenizer with GPT-2's shape: byte-level pre-tokenizer, no prefix space, BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_lines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def byte_bpe() -> Any:
    return train_byte_bpe()


texts = st.lists(st.sampled_from(WORDS + ["", " ", "  ", "\n", ".", "A", "B", "a"]), max_size=25).map(" ".join)
mixed_texts = st.one_of(texts, st.text(max_size=40))

# ---------------------------------------------------------------------------------------------------------------
# Default track


@settings(max_examples=300, deadline=None)
@given(pred=mixed_texts, target=mixed_texts)
def test_default_track_pair_is_bit_identical_to_rouge_score(pred: str, target: str) -> None:
    r1, rl = RougeScorer(DefaultTokenizer()).score([pred], [[target]], workers=1)
    assert r1[0] == original_rouge("rouge1", pred, target)
    assert rl[0] == original_rouge("rougeL", pred, target)


@settings(max_examples=60, deadline=None)
@given(data=st.lists(st.tuples(mixed_texts, st.lists(mixed_texts, min_size=1, max_size=4)), min_size=1, max_size=12))
def test_overall_metrics_match_original_compute_metrics(data: list[tuple[str, list[str]]]) -> None:
    preds = [p for p, _ in data]
    refs = [r for _, r in data]
    scores = score_examples(preds, refs)
    assert aggregate(scores) == original_compute_metrics(preds, refs)


@settings(max_examples=300, deadline=None)
@given(a=st.lists(st.integers(0, 6), max_size=80), b=st.lists(st.integers(0, 6), max_size=80))
def test_bit_parallel_lcs_equals_dp_table(a: list[int], b: list[int]) -> None:
    expected = rouge_scorer._lcs_table(a, b)[-1][-1] if a and b else 0
    assert lcs_length(a, b) == expected
    assert lcs_length(b, a) == expected


@settings(max_examples=300, deadline=None)
@given(seqs=st.lists(st.lists(st.integers(0, 5), max_size=30).map(tuple), min_size=2, max_size=6),
       picks=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_fused_pair_scores_equal_the_two_definitions(seqs: list[tuple[int, ...]],
                                                     picks: list[tuple[int, int]]) -> None:
    """`score_pairs` (one pass, caches shared across calls) gives exactly `rouge1_f` and `rougel_f`."""
    pairs = [(p % len(seqs), t % len(seqs)) for p, t in picks]
    caches = PairCaches()
    for _ in range(2):  # the second call reads the caches the first filled
        got = score_pairs(seqs, pairs, caches)
        want = [(rouge1_f(Counter(seqs[t]), len(seqs[t]), Counter(seqs[p]), len(seqs[p])), rougel_f(seqs[t], seqs[p]))
                for p, t in pairs]
        assert got == want


def test_lcs_handles_sequences_longer_than_a_machine_word() -> None:
    rng = random.Random(1)
    a = [rng.randrange(20) for _ in range(700)]
    b = [rng.randrange(20) for _ in range(300)]
    assert lcs_length(a, b) == rouge_scorer._lcs_table(a, b)[-1][-1]


@pytest.mark.parametrize(
    "s", ["Hello, World!", "  a\tb\n c ", "It's (maybe) #1...", "", "!!!", "Ünïcödé — “quotes”", "A.B"]
)
def test_normalize_answer_matches_original(s: str) -> None:
    assert normalize_answer(s) == original_normalize(s)


def test_exact_match_is_max_over_references_and_normalized() -> None:
    scores = score_examples(["The answer.", "no", "B"], [["x", "the ANSWER"], ["yes"], ["b", "B"]])
    assert scores.exact_match == [1, 0, 1]
    assert aggregate(scores)["exact_match"] == round(100.0 * 2 / 3, 4)


def test_rouge_max_is_taken_per_metric_independently() -> None:
    # ROUGE-1 prefers the first reference (all words, wrong order), ROUGE-L the second (fewer, in order).
    pred = "a b c d"
    refs = ["d c b a", "a b x y"]
    r1, rl = RougeScorer(DefaultTokenizer()).score([pred], [refs], workers=1)
    assert r1[0] == max(original_rouge("rouge1", pred, r) for r in refs) == 1.0
    assert rl[0] == max(original_rouge("rougeL", pred, r) for r in refs) == 0.5


def test_stemming_applies_only_to_long_tokens() -> None:
    r1, _ = RougeScorer(DefaultTokenizer()).score(["running cats"], [["run cat"]], workers=1)
    assert r1[0] == original_rouge("rouge1", "running cats", "run cat")


def test_parallel_scoring_equals_serial(byte_bpe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    lines = training_lines(200, seed=9)
    preds = [rng.choice(lines) for _ in range(400)]
    refs = [[rng.choice(lines) for _ in range(rng.randint(1, 3))] for _ in range(400)]
    for tok in (DefaultTokenizer(), XlingualTokenizer(byte_bpe)):
        assert RougeScorer(tok).score(preds, refs, workers=2) == RougeScorer(tok).score(preds, refs, workers=1)
    # workers=None goes to the pool above the threshold
    calls: list[int] = []
    real = rouge._score_in_pool
    monkeypatch.setattr(rouge, "PARALLEL_MIN_PAIRS", 100)
    monkeypatch.setattr(rouge, "available_cpus", lambda: 2)

    def spy(*args: Any) -> tuple[list[float], list[float]]:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(rouge, "_score_in_pool", spy)
    assert score_examples(preds, refs).rougeL == score_examples(preds, refs, workers=1).rougeL
    assert calls == [1]


def test_score_examples_rejects_bad_references() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        score_examples(["a"], [[]])
    with pytest.raises(ValueError, match="non-empty list"):
        score_examples(["a"], ["a"])


# ---------------------------------------------------------------------------------------------------------------
# Grouping


def test_grouped_metrics_keys_rounding_renames_and_headline() -> None:
    preds = ["yes", "no", "a title here", "x"]
    refs = [["yes"], ["yes"], ["A Title"], ["y"]]
    tasks = ["task1_te", "task1_te", "task121_atomic_question_rewriting", "task9_other"]
    cats = ["Textual Entailment", "Textual Entailment", "Question Rewriting", "Question Answering"]
    report = evaluate(preds, refs, tasks, cats)
    assert report["num_examples"] == 4
    assert report["per_task"]["exact_match_for_task1_te"] == 50.0
    assert "rougeL_for_task121_zest_question_rewriting" in report["per_task"]
    assert not any("atomic" in k for k in report["per_task"])
    assert report["per_category"]["exact_match_for_textual_entailment"] == 50.0
    rl_qr = original_rouge("rougeL", "a title here", "A Title")
    assert report["per_category"]["rougeL_for_question_rewriting"] == round(100.0 * rl_qr, 4)
    assert report["headline"] == {
        "exact_match_for_textual_entailment": 50.0,
        "rougeL_for_question_rewriting": round(100.0 * rl_qr, 4),
    }
    for group in ("task1_te", "task9_other"):
        idx = [i for i, t in enumerate(tasks) if t == group]
        expected = original_compute_metrics([preds[i] for i in idx], [refs[i] for i in idx])
        assert {m: report["per_task"][f"{m}_for_{group}"] for m in expected} == expected


def test_groups_sum_in_input_order() -> None:
    # Floats whose sum depends on the order: the original summed each group front to back.
    vals = [0.1, 0.7, 1e-16, 0.2, 0.3]
    assert sum(vals[::-1]) != sum(vals)
    scores = summarize(ExampleScores([0] * 5, vals, vals), ["t"] * 5, ["g"] * 5, "default")
    total = 0.0
    for v in vals:
        total += v
    assert scores.per_task["t"]["rouge1"] == scores.per_category["g"]["rouge1"] == round(100.0 * total / 5, 4)
    assert scores.overall["rougeL"] == round(100.0 * total / 5, 4) and scores.tasks["t"].sums["rougeL"] == total


def test_headline_ignores_categories_without_a_headline_metric() -> None:
    figures = {"exact_match": 2.0, "rouge1": 3.0, "rougeL": 1.0}
    scores = Scores("default", 2, figures, {}, {"question_answering": figures, "word_analogy": figures})
    assert flatten(scores.headline()) == {"exact_match_for_word_analogy": 2.0}


def test_group_keys_round_trip() -> None:
    assert group_key("rougeL", "task1_a_for_b") == "rougeL_for_task1_a_for_b"
    assert split_group_key("rougeL_for_task1_a_for_b") == ("rougeL", "task1_a_for_b")
    assert split_group_key("bleu_for_x") is None and split_group_key("rougeL") is None


# ---------------------------------------------------------------------------------------------------------------
# Cross-lingual track (stand-in byte-level BPE tokenizer)


def test_standin_tokenizer_produces_empty_tokens_like_gpt2(byte_bpe: Any) -> None:
    toks = byte_bpe.tokenize("a  b")  # the lone second space is its own token: "Ġ" -> ""
    stripped = OriginalGPTTokenizer(byte_bpe).tokenize("a  b")
    assert "Ġ" in toks
    assert "" in stripped
    assert XlingualTokenizer(byte_bpe).tokenize("a  b") == stripped


@settings(max_examples=200, deadline=None)
@given(pred=mixed_texts, target=mixed_texts)
def test_xlingual_pair_is_bit_identical_to_rouge_score_with_gpt_tokenizer(byte_bpe: Any, pred: str, target: str) -> None:
    r1, rl = RougeScorer(XlingualTokenizer(byte_bpe)).score([pred], [[target]], workers=1)
    assert r1[0] == original_rouge("rouge1", pred, target, byte_bpe)
    assert rl[0] == original_rouge("rougeL", pred, target, byte_bpe)


def test_xlingual_overall_matches_original(byte_bpe: Any) -> None:
    rng = random.Random(7)
    lines = training_lines(120, seed=5)
    preds = [rng.choice(lines) for _ in range(60)]
    refs = [[rng.choice(lines) for _ in range(rng.randint(1, 3))] for _ in range(60)]
    scores = score_examples(preds, refs, track="xlingual", xlingual_tokenizer=byte_bpe)
    assert aggregate(scores) == original_compute_metrics(preds, refs, byte_bpe)
    # Non-Latin text scores 0 on the default track but not on the cross-lingual one.
    cjk = score_examples(["東京 日本語"], [["東京 テスト"]], track="xlingual", xlingual_tokenizer=byte_bpe)
    assert cjk.rougeL[0] > 0
    assert score_examples(["東京 日本語"], [["東京 テスト"]]).rougeL[0] == 0


def test_xlingual_tokenizer_accepts_bare_tokenizers_and_callables(byte_bpe: Any) -> None:
    text = "Привет  мир, 東京!"
    expected = OriginalGPTTokenizer(byte_bpe).tokenize(text)
    assert XlingualTokenizer(byte_bpe.backend_tokenizer).tokenize(text) == expected
    assert XlingualTokenizer(byte_bpe.tokenize).tokenize(text) == expected


def test_xlingual_tokenizer_loads_lazily_and_fails_with_one_line(tmp_path: Any) -> None:
    tok = XlingualTokenizer(name=str(tmp_path / "no-such-tokenizer"))  # nothing is loaded yet
    with pytest.raises(ConfigError, match="cannot load") as info:
        tok.tokenize("x")
    assert "\n" not in str(info.value)


def test_xlingual_tokenizer_loads_a_local_directory(byte_bpe: Any, tmp_path: Any) -> None:
    byte_bpe.save_pretrained(tmp_path / "tok")
    tok = XlingualTokenizer(name=str(tmp_path / "tok"))
    assert tok.tokenize("Hello  world") == OriginalGPTTokenizer(byte_bpe).tokenize("Hello  world")


def _ni_texts(ni_sample: Any, per_task: int = 30) -> list[str]:
    import orjson

    texts: list[str] = []
    for path in sorted((ni_sample / "tasks").glob("*.json")):
        task = orjson.loads(path.read_bytes())
        texts += [str(d) for d in task.get("Definition", [])]
        for inst in task["Instances"][:per_task]:
            texts.append(str(inst["input"]))
            texts += [str(o) for o in inst["output"]]
    return texts


def test_default_tokenizer_equals_rouge_score_on_real_text(ni_sample: Any) -> None:
    from nltk.stem import porter
    from rouge_score import tokenize

    stemmer = porter.PorterStemmer()
    ours = DefaultTokenizer()
    extra = ["", "  ", "K\u212a \u0130stanbul", "don't STOP-believing!!", "a\nb\tc\u00a0d", "caf\u00e9s 1990s"]
    texts = _ni_texts(ni_sample) + extra
    assert len(texts) > 3000
    for text in texts:
        assert ours.tokenize(text) == tokenize.tokenize(text, stemmer), text


def test_one_scorer_across_files_equals_a_fresh_scorer_per_file(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = training_lines(120, seed=5)
    rng = random.Random(11)
    refs = [[rng.choice(lines) for _ in range(rng.randint(1, 3))] for _ in range(150)]
    files = [[rng.choice(lines) for _ in range(150)] for _ in range(3)]
    shared = RougeScorer(DefaultTokenizer())
    for preds in files:
        assert shared.score(preds, refs, workers=1) == RougeScorer(DefaultTokenizer()).score(preds, refs, workers=1)
    fresh = RougeScorer(DefaultTokenizer())
    fresh.score(files[0], refs, workers=1)
    assert len(shared._pair_scores) > len(fresh._pair_scores)  # it kept the pairs of every file
    monkeypatch.setattr(rouge, "MAX_CACHED", 10)  # past the bound the scorer starts over, with the same results
    assert shared.score(files[0], refs, workers=1) == fresh.score(files[0], refs, workers=1)
    assert len(shared._pair_scores) == len(fresh._pair_scores)


def test_parallel_and_serial_metrics_are_byte_identical() -> None:
    import orjson

    lines = training_lines(200, seed=21)
    rng = random.Random(4)
    n = 300
    preds = [rng.choice(lines) for _ in range(n)]
    refs = [[rng.choice(lines) for _ in range(rng.randint(1, 3))] for _ in range(n)]
    tasks = [f"task{i % 7:03d}_x" for i in range(n)]
    cats = [["Title Generation", "Textual Entailment", "Question Answering"][i % 3] for i in range(n)]
    serial = evaluate(preds, refs, tasks, cats, workers=1)
    parallel = evaluate(preds, refs, tasks, cats, workers=2)
    assert orjson.dumps(serial) == orjson.dumps(parallel)
