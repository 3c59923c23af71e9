"""The two ROUGE tracks of the original (reference.md section 3) and a fast multi-reference scorer.

* default: rouge-score's own tokenizer (`rouge_score.tokenize.tokenize`, lower-case, [a-z0-9] runs) with the
  Porter stemmer, which rouge-score applies to tokens longer than 3 characters;
* xlingual: GPT-2 byte-level BPE tokens with `lstrip("Ġ")` applied to each (empty tokens are kept), no stemming.

`RougeScorer` tokenizes every distinct string once, interns tokens as integers and scores every distinct
(prediction, reference) pair once, ROUGE-1 and ROUGE-L together (see `evaluation.overlap`). Many new pairs are
scored by a process pool (forked: the workers inherit the token ids), tokenization staying in one process.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from evaluation.overlap import PairCaches, Seq, score_pairs
from ni.errors import ConfigError

GPT2_SPACE = "Ġ"  # how GPT-2's byte-level alphabet shows the space byte
_ALNUM_RUN = re.compile(r"[a-z0-9]+")
_VALID_TOKEN = re.compile(r"^[a-z0-9]+$")


class Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...


class CachingStemmer:
    """NLTK's Porter stemmer (rouge-score's choice) with a memo: the same words recur across a whole eval set."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self._porter = porter.PorterStemmer()
        self._cache: dict[str, str] = {}

    def stem(self, word: str) -> str:
        out = self._cache.get(word)
        if out is None:
            out = self._cache[word] = self._porter.stem(word)
        return out


class DefaultTokenizer:
    """rouge-score's DefaultTokenizer(use_stemmer=True), with a memo per word.

    rouge-score lower-cases, turns every run of characters outside [a-z0-9] into a space, splits, stems the words
    longer than 3 characters and drops tokens that are not [a-z0-9]+ (after stemming). Finding the [a-z0-9]+ runs of
    the lower-cased text gives the same words; each word's final token (or none) is computed once.
    """

    def __init__(self) -> None:
        self._stemmer = CachingStemmer()
        self._words: dict[str, str] = {}

    @staticmethod
    def words(text: str) -> list[str]:
        return _ALNUM_RUN.findall(text.lower())

    def token(self, word: str) -> str:
        """A word's token: stemmed when longer than 3 characters; "" when it is dropped."""
        t = self._words.get(word)
        if t is None:
            t = self._stemmer.stem(word) if len(word) > 3 else word
            t = self._words[word] = t if _VALID_TOKEN.match(t) else ""
        return t

    def tokenize(self, text: str) -> list[str]:
        return [t for w in self.words(text) if (t := self.token(w))]


class XlingualTokenizer:
    """The original's GPTTokenizer: byte-level BPE tokens, each with every leading "Ġ" stripped.

    `tokenizer` is anything with `.tokenize(text) -> list[str]` (a transformers tokenizer), a `tokenizers.Tokenizer`,
    or a callable returning token strings. Without one, `AutoTokenizer.from_pretrained(name)` is loaded at first use.
    """

    def __init__(self, tokenizer: Any = None, name: str = "gpt2") -> None:
        self._raw: Callable[[str], list[str]] | None = None if tokenizer is None else _token_fn(tokenizer)
        self.name = name

    def _load(self) -> Callable[[str], list[str]]:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.name)
        except Exception as e:  # no network, no cache, bad path: all one user-facing error
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"xlingual tokenizer '{self.name}': cannot load ({first})",
                hint="Pass --xlingual-tokenizer with a local GPT-2 tokenizer directory.",
            ) from None
        return _token_fn(tok)

    def tokenize(self, text: str) -> list[str]:
        if self._raw is None:
            self._raw = self._load()
        return [t.lstrip(GPT2_SPACE) for t in self._raw(text)]


def _token_fn(tok: Any) -> Callable[[str], list[str]]:
    if hasattr(tok, "tokenize"):
        return tok.tokenize
    if hasattr(tok, "encode") and hasattr(tok, "get_vocab"):  # a bare tokenizers.Tokenizer
        return lambda text: list(tok.encode(text, add_special_tokens=False).tokens)
    if callable(tok):
        return tok
    raise ConfigError(f"xlingual tokenizer: unsupported object of type {type(tok).__name__}")


def make_tokenizer(track: str, xlingual_tokenizer: Any = None) -> Tokenizer:
    if track == "default":
        return DefaultTokenizer()
    if track == "xlingual":
        if isinstance(xlingual_tokenizer, XlingualTokenizer):
            return xlingual_tokenizer
        if isinstance(xlingual_tokenizer, str):
            return XlingualTokenizer(name=xlingual_tokenizer)
        return XlingualTokenizer(xlingual_tokenizer)
    raise ConfigError(f"unknown track '{track}'", hint="Valid tracks: default, xlingual.")


class RougeScorer:
    """Max-over-references ROUGE-1 and ROUGE-L F-measures for many predictions, with every cache in one place.

    The caches (token ids of each distinct text, the scores of each distinct pair) outlive a `score()` call, so one
    scorer serves many prediction files of the same test set (`shared_scorer`): references are tokenized once and a
    prediction repeated across runs is scored once. Past MAX_CACHED texts they start over.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._vocab: dict[str, int] = {}
        self._word_ids: dict[str, int] = {}  # DefaultTokenizer: a word's token id, -1 when it has none
        self._seqs: list[Seq] = []
        self._seq_of_text: dict[str, int] = {}
        self._pair_scores: dict[tuple[int, int], tuple[float, float]] = {}
        self._caches = PairCaches()

    def _token_ids(self, text: str) -> Seq:
        tok, vocab = self.tokenizer, self._vocab
        if not isinstance(tok, DefaultTokenizer):
            return tuple(vocab.setdefault(t, len(vocab)) for t in tok.tokenize(text))
        words = tok.words(text)
        word_ids = self._word_ids
        ids = [word_ids.get(w) for w in words]
        if None in ids:  # a word not seen before: its token's id, once
            for i, w in enumerate(words):
                if ids[i] is None:
                    t = tok.token(w)
                    ids[i] = word_ids[w] = vocab.setdefault(t, len(vocab)) if t else -1
        found = cast(list[int], ids)
        return tuple(i for i in found if i != -1) if -1 in found else tuple(found)

    def _intern(self, text: str) -> int:
        idx = self._seq_of_text.get(text)
        if idx is None:
            idx = self._seq_of_text[text] = len(self._seqs)
            self._seqs.append(self._token_ids(text))
        return idx

    def _reset_if_large(self) -> None:
        if len(self._seqs) > MAX_CACHED or len(self._pair_scores) > 2 * MAX_CACHED:
            self._vocab, self._word_ids, self._seqs, self._seq_of_text, self._pair_scores = {}, {}, [], {}, {}
            self._caches = PairCaches()

    def score(
        self, predictions: Sequence[str], references: Sequence[Sequence[str]], workers: int | None = None
    ) -> tuple[list[float], list[float]]:
        """Per prediction: (max ROUGE-1 F over its references, max ROUGE-L F over its references).

        Texts are tokenized here, once each; only the pairs not scored before are scored, by a process pool of
        `workers` when given, else (`None`) by every available core when there are more than PARALLEL_MIN_PAIRS
        of them, below which a pool costs more than it saves.
        """
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
        self._reset_if_large()
        intern, known, seen = self._intern, self._pair_scores, self._seq_of_text.get
        # per example: its one (prediction, reference) key, or the list of them when it has several references
        per_example: list[tuple[int, int] | list[tuple[int, int]]] = []
        new: dict[tuple[int, int], None] = {}
        for pred, refs in zip(predictions, references, strict=True):
            p = seen(pred)
            if p is None:
                p = intern(pred)
            if len(refs) == 1:
                t = seen(refs[0])
                key = (p, intern(refs[0]) if t is None else t)
                per_example.append(key)
                if key not in known:
                    new[key] = None
                continue
            keys = [(p, i if (i := seen(r)) is not None else intern(r)) for r in refs]
            per_example.append(keys)
            for k in keys:
                if k not in known:
                    new[k] = None
        todo = list(new)
        if workers is None:
            workers = available_cpus() if len(todo) > PARALLEL_MIN_PAIRS else 1
        if workers > 1 and len(todo) >= 2 * workers:
            scored = _score_in_pool(self._seqs, todo, workers, self._caches)
        else:
            scored = score_pairs(self._seqs, todo, self._caches)
        known.update(zip(todo, scored, strict=True))
        r1: list[float] = []
        rl: list[float] = []
        for entry in per_example:
            if isinstance(entry, tuple):
                a, b = known[entry]
            else:
                a = max(known[k][0] for k in entry)
                b = max(known[k][1] for k in entry)
            r1.append(a)
            rl.append(b)
        return r1, rl


_shared: dict[tuple[str, Any], tuple[Any, RougeScorer]] = {}


def shared_scorer(track: str, xlingual_tokenizer: Any = None) -> RougeScorer:
    """This process's scorer for a track (and xlingual tokenizer), kept for the next prediction file."""
    key = (track, xlingual_tokenizer if isinstance(xlingual_tokenizer, str | None) else id(xlingual_tokenizer))
    held = _shared.get(key)
    if held is None or held[0] is not xlingual_tokenizer:  # an id can be reused once its object is gone
        held = _shared[key] = (xlingual_tokenizer, RougeScorer(make_tokenizer(track, xlingual_tokenizer)))
    return held[1]


# --- processes: the pairs to score in contiguous chunks; workers inherit the token ids by fork --------------------

PARALLEL_MIN_PAIRS = 100_000  # new pairs; bench/bench_scoring.py on 2 shared cores: a pool did not win at 47k
MAX_CACHED = 1_000_000
_CHUNKS_PER_WORKER = 2
_pool_seqs: Sequence[Seq] = ()
_pool_caches = PairCaches()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _score_chunk(pairs: Sequence[tuple[int, int]]) -> list[tuple[float, float]]:
    return score_pairs(_pool_seqs, pairs, _pool_caches)


def _score_in_pool(
    seqs: Sequence[Seq], pairs: Sequence[tuple[int, int]], workers: int, caches: PairCaches
) -> list[tuple[float, float]]:
    global _pool_seqs, _pool_caches
    if "fork" not in multiprocessing.get_all_start_methods():  # workers could not inherit the token ids
        return score_pairs(seqs, pairs, caches)
    size = -(-len(pairs) // (workers * _CHUNKS_PER_WORKER))
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    _pool_seqs, _pool_caches = seqs, caches
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_score_chunk, chunks)
    finally:
        _pool_seqs, _pool_caches = (), PairCaches()
    return [x for part in parts for x in part]
