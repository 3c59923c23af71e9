"""Prompt encodings of Tk-Instruct, byte-identical to the original (reference.md section 2).

`PromptEncoder` builds the source text (and, with a tokenizer, the input ids) of an instance. The original
re-tokenizes the whole growing prompt once per candidate example and once more for the batch. Here each piece
(definition, example, input part) is tokenized once -- definitions and examples once per task, thanks to a cache
-- and the length checks add piece lengths. That is exact when the tokenizer splits pieces at the whitespace
that joins them (T5, mT5, byte-level BPE...): `PromptEncoder` verifies it on probe strings of the very shapes it
joins and otherwise falls back to the original's re-tokenization, `ni.encoding_fallback` (which tests and
benchmarks also use as the obviously-correct version). The pieces themselves are in `ni.prompt`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from ni.data import Example, Instance, Task
from ni.encoding_fallback import fallback_encode
from ni.errors import ConfigError
from ni.prompt import Encoded, Encoding, definition_part, example_part, input_part, task_name_part

NAMED_ENCODINGS: dict[str, Encoding] = {
    "input_only": Encoding(add_task_definition=False),
    "task_name_input": Encoding(add_task_name=True, add_task_definition=False),
    "instruct_input": Encoding(),
    "pos_1_input": Encoding(add_task_definition=False, num_pos_examples=1),
    "pos_2_input": Encoding(add_task_definition=False, num_pos_examples=2),
    "pos_4_input": Encoding(add_task_definition=False, num_pos_examples=4),
    "instruct_pos_1_input": Encoding(num_pos_examples=1),
    "instruct_pos_2_input": Encoding(num_pos_examples=2),
    "instruct_pos_4_input": Encoding(num_pos_examples=4),
    "instruct_pos_2_neg_2_input": Encoding(num_pos_examples=2, num_neg_examples=2),
    "instruct_pos_2_neg_2_explanation_input": Encoding(num_pos_examples=2, num_neg_examples=2, add_explanation=True),
}
TK_INSTRUCT = "tk_instruct"
# The Tk-Instruct mixture: each instance independently gets one of these (reference.md section 2.8).
TK_INSTRUCT_MIXTURE: tuple[Encoding, ...] = (
    Encoding(),
    Encoding(add_task_definition=False, num_pos_examples=2),
    Encoding(num_pos_examples=2),
    Encoding(num_pos_examples=2, num_neg_examples=2),
    Encoding(num_pos_examples=2, add_explanation=True),
)
ENCODING_NAMES = (*NAMED_ENCODINGS, TK_INSTRUCT)


def resolve_encoding(name: str) -> tuple[Encoding, ...]:
    """The encodings a name stands for: one for a named encoding, five for the mixture."""
    if name == TK_INSTRUCT:
        return TK_INSTRUCT_MIXTURE
    if name not in NAMED_ENCODINGS:
        raise ConfigError(f"unknown encoding '{name}'", hint=f"Valid names: {', '.join(ENCODING_NAMES)}.")
    return (NAMED_ENCODINGS[name],)


class _Pieces:
    """Tokenizes each distinct piece once; knows the special tokens the tokenizer wraps a text in."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.cache: dict[str, list[int]] = {}
        probe = "probe text"
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe)["input_ids"]
        start = next(i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain)
        self.prefix: list[int] = full[:start]
        self.suffix: list[int] = full[start + len(plain) :]
        self.n_special = len(self.prefix) + len(self.suffix)

    def ids(self, piece: str) -> list[int]:
        got = self.cache.get(piece)
        if got is None:
            got = self.cache[piece] = self.tok(piece, add_special_tokens=False)["input_ids"]
        return got

    def many(self, pieces: Sequence[str]) -> list[list[int]]:
        """Batch-tokenize pieces that are not worth caching (instance inputs)."""
        if not pieces:
            return []
        return list(self.tok(list(pieces), add_special_tokens=False)["input_ids"])

    def is_additive(self) -> bool:
        """Does tokenizing the joined prompt equal joining the tokenized pieces, for the joins we make?"""
        ex1 = Example("An input, with 'quotes' and 12.5% -- numbers", "Some output", "Because: it is")
        ex2 = Example("  Leading spaces\nand\tnewline ", "42", None)
        pieces_sets = [
            [task_name_part("task001_probe_name"), definition_part("Given a text, answer."), input_part("Hi!")],
            [definition_part("Define x"), example_part("Positive", 1, ex1, True), " ",
             example_part("Positive", 2, ex2, True), example_part("Negative", 1, ex2, False), input_part(" x ")],
            [example_part("Positive", 1, ex2, False), input_part("ünïcode text — dash")],
            [input_part("")],
        ]
        for pieces in pieces_sets:
            joined = self.tok("".join(pieces), add_special_tokens=False)["input_ids"]
            if joined != [i for p in pieces for i in self.tok(p, add_special_tokens=False)["input_ids"]]:
                return False
        return True


class PromptEncoder:
    """Builds Tk-Instruct prompts for one encoding (or the Tk-Instruct mixture).

    Without a tokenizer it produces text only and adds every requested example (no length limit).
    """

    def __init__(
        self,
        encoding: str | Encoding,
        tokenizer: Any = None,
        max_source_length: int | None = None,
        seed: int = 42,
        fast: bool = True,
    ):
        self.name = encoding if isinstance(encoding, str) else "custom"
        self.encodings = resolve_encoding(encoding) if isinstance(encoding, str) else (encoding,)
        if max_source_length is not None and tokenizer is None:
            raise ConfigError("max_source_length needs a tokenizer", hint="For example: --tokenizer t5-base.")
        self.tokenizer = tokenizer
        self.max_source_length = max_source_length
        self.seed = seed
        self.pieces = _Pieces(tokenizer) if tokenizer is not None else None
        self.fast = fast and (self.pieces is None or self.pieces.is_additive())

    def choose(self, instance: Instance) -> Encoding:
        """The encoding of one instance: fixed, or drawn per instance for the mixture (seeded by its id)."""
        if len(self.encodings) == 1:
            return self.encodings[0]
        return random.Random(f"{self.seed}:{instance.id}").choice(self.encodings)

    def source(self, task: Task, instance: Instance) -> str:
        return self.encode(task, instance).source

    def encode(self, task: Task, instance: Instance) -> Encoded:
        return self.encode_many([(task, instance)])[0]

    def encode_many(self, pairs: Iterable[tuple[Task, Instance]]) -> list[Encoded]:
        pairs = list(pairs)
        if self.pieces is None:
            return [Encoded(self._text(task, inst, self.choose(inst))) for task, inst in pairs]
        if not self.fast:
            return [
                fallback_encode(task, inst, self.choose(inst), self.tokenizer, self.max_source_length)
                for task, inst in pairs
            ]
        inputs = [input_part(inst.input) for _, inst in pairs]
        input_ids = self.pieces.many(inputs)
        return [
            self._assemble(task, self.choose(inst), inp, ids)
            for (task, inst), inp, ids in zip(pairs, inputs, input_ids, strict=True)
        ]

    # -- text only ------------------------------------------------------------------------------------

    def _text(self, task: Task, inst: Instance, enc: Encoding) -> str:
        name = task_name_part(task.name) if enc.add_task_name else ""
        definition = definition_part(task.definition) if enc.add_task_definition else ""
        pos = [
            example_part("Positive", k, ex, enc.add_explanation)
            for k, ex in enumerate(task.positive_examples[: enc.num_pos_examples], 1)
        ]
        neg = [
            example_part("Negative", k, ex, enc.add_explanation)
            for k, ex in enumerate(task.negative_examples[: enc.num_neg_examples], 1)
        ]
        return name + definition + "".join(pos) + "".join(neg) + input_part(inst.input)

    # -- with a tokenizer: piece lengths instead of re-tokenizing ----------------------------------------

    def _fit_examples(
        self, examples: list[Example], kind: str, enc: Encoding, n: int, used: int
    ) -> tuple[list[str], int]:
        """Keep examples while `used` + the space-joined kept examples + the candidate fits.
        Returns the kept examples and the token count of their space-joined form."""
        assert self.pieces is not None
        limit = self.max_source_length
        space = len(self.pieces.ids(" "))
        kept: list[str] = []
        joined = 0
        for k, ex in enumerate(examples[:n], 1):
            s = example_part(kind, k, ex, enc.add_explanation)
            c = len(self.pieces.ids(s))
            if limit is not None and used + joined + c > limit:
                break
            joined += c + (space if kept else 0)
            kept.append(s)
        return kept, joined

    def _assemble(self, task: Task, enc: Encoding, inp: str, inp_ids: list[int]) -> Encoded:
        p = self.pieces
        assert p is not None
        name = task_name_part(task.name) if enc.add_task_name else ""
        definition = definition_part(task.definition) if enc.add_task_definition else ""
        def_ids = p.ids(definition) if definition else []
        # The original counts the definition, the examples and the input part -- not the task name.
        base = p.n_special + len(def_ids) + len(inp_ids)
        pos, pos_joined = self._fit_examples(
            task.positive_examples, "Positive", enc, enc.num_pos_examples, base
        )
        neg, _ = self._fit_examples(
            task.negative_examples, "Negative", enc, enc.num_neg_examples, base + pos_joined
        )
        source = name + definition + "".join(pos) + "".join(neg) + inp
        body: list[int] = []
        for piece in (name, definition, *pos, *neg):
            if piece:
                body += p.ids(piece)
        body += inp_ids
        ids = p.prefix + body + p.suffix
        limit = self.max_source_length
        if limit is None or len(ids) <= limit:
            return Encoded(source, ids)
        text = self.tokenizer.decode(ids[:limit], skip_special_tokens=True)
        ids = self.tokenizer(text, max_length=limit, truncation=True)["input_ids"]
        return Encoded(text, list(ids), truncated=True)
