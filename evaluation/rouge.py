"""The two ROUGE tracks of the original (reference.md section 3) and a fast multi-reference scorer.

* default: rouge-score's own tokenizer (`rouge_score.tokenize.tokenize`, lower-case, [a-z0-9] runs) with the
  Porter stemmer, which rouge-score applies to tokens longer than 3 characters;
* xlingual: GPT-2 byte-level BPE tokens with `lstrip("Ġ")` applied to each (empty tokens are kept), no stemming.

`RougeScorer` tokenizes every distinct string once, interns tokens as integers and scores every distinct
(prediction, reference) pair once, ROUGE-1 and ROUGE-L together (see `evaluation.overlap`). Large inputs are split
into contiguous chunks of examples scored by a process pool, one scorer (and cache) per worker.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from evaluation.overlap import Seq, score_pairs
from ni.errors import ConfigError

GPT2_SPACE = "Ġ"  # how GPT-2's byte-level alphabet shows the space byte


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
    """rouge-score's DefaultTokenizer(use_stemmer=True), with a cached stemmer."""

    def __init__(self) -> None:
        from rouge_score import tokenize

        self._tokenize = tokenize.tokenize
        self._stemmer = CachingStemmer()

    def tokenize(self, text: str) -> list[str]:
        return list(self._tokenize(text, self._stemmer))


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
    """Max-over-references ROUGE-1 and ROUGE-L F-measures for many predictions, with every cache in one place."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._vocab: dict[str, int] = {}
        self._seqs: list[Seq] = []
        self._seq_of_text: dict[str, int] = {}

    def _intern(self, text: str) -> int:
        idx = self._seq_of_text.get(text)
        if idx is None:
            vocab = self._vocab
            ids = tuple(vocab.setdefault(t, len(vocab)) for t in self.tokenizer.tokenize(text))
            idx = self._seq_of_text[text] = len(self._seqs)
            self._seqs.append(ids)
        return idx

    def score(
        self, predictions: Sequence[str], references: Sequence[Sequence[str]], workers: int | None = None
    ) -> tuple[list[float], list[float]]:
        """Per prediction: (max ROUGE-1 F over its references, max ROUGE-L F over its references).

        Repeated examples are scored once. `workers=None` uses every available core when the distinct examples
        hold more than PARALLEL_MIN_PAIRS prediction/reference pairs, else one process.
        """
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
        index: dict[tuple[str, tuple[str, ...]], int] = {}
        order = [index.setdefault((p, tuple(r)), len(index)) for p, r in zip(predictions, references, strict=True)]
        examples = list(index)
        if workers is None:
            workers = available_cpus() if sum(len(r) for _, r in examples) > PARALLEL_MIN_PAIRS else 1
        if workers > 1 and len(examples) >= 2 * workers:
            self.tokenizer.tokenize("")  # load a lazy tokenizer here, once, not in every worker
            r1, rl = _score_in_pool(self.tokenizer, examples, workers)
        else:
            r1, rl = self._score_distinct(examples)
        return [r1[i] for i in order], [rl[i] for i in order]

    def _score_distinct(self, examples: Sequence[tuple[str, Sequence[str]]]) -> tuple[list[float], list[float]]:
        pair_index: dict[tuple[int, int], int] = {}
        per_example: list[list[int]] = []
        for pred, refs in examples:
            p = self._intern(pred)
            per_example.append([pair_index.setdefault((p, self._intern(r)), len(pair_index)) for r in refs])
        scores = score_pairs(self._seqs, list(pair_index))
        return [max(scores[k][0] for k in ks) for ks in per_example], [max(scores[k][1] for k in ks) for ks in per_example]


# --- processes: contiguous chunks of examples, each worker with its own scorer (and caches) ------------------------

PARALLEL_MIN_PAIRS = 20_000  # below this a process pool costs more than it saves
_CHUNKS_PER_WORKER = 4
_worker_scorer: RougeScorer | None = None


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _init_worker(tokenizer: Tokenizer) -> None:
    global _worker_scorer
    _worker_scorer = RougeScorer(tokenizer)


def _score_chunk(examples: Sequence[tuple[str, Sequence[str]]]) -> tuple[list[float], list[float]]:
    assert _worker_scorer is not None
    return _worker_scorer._score_distinct(examples)


def _score_in_pool(
    tokenizer: Tokenizer, examples: Sequence[tuple[str, Sequence[str]]], workers: int
) -> tuple[list[float], list[float]]:
    # fork: workers inherit the tokenizer (and its caches) without pickling; elsewhere it must pickle.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    size = -(-len(examples) // (workers * _CHUNKS_PER_WORKER))
    chunks = [examples[i : i + size] for i in range(0, len(examples), size)]
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        parts = pool.map(_score_chunk, chunks)
    return [x for r1, _ in parts for x in r1], [x for _, rl in parts for x in rl]
