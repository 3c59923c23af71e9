"""The pieces of a Tk-Instruct prompt, byte-identical to the original (reference.md section 2): what goes into a
prompt (`Encoding`), the text of each part, and what comes out (`Encoded`)."""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from typing import Any

from ni.data import Example

PUNCTUATION = frozenset(string.punctuation)


@dataclass(frozen=True)
class Encoding:
    """What goes into a prompt. Field names are the original's."""

    add_task_name: bool = False
    add_task_definition: bool = True
    num_pos_examples: int = 0
    num_neg_examples: int = 0
    add_explanation: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the pieces of a prompt ---------------------------------------------------------------------------


def _end_with_punct(s: str) -> str:
    return s if s[-1] in PUNCTUATION else s + "."


def input_part(text: str) -> str:
    return "Now complete the following example -\n" + _end_with_punct(f"Input: {text.strip()}") + "\nOutput: "


def task_name_part(name: str) -> str:
    return name + ". "


def definition_part(definition: str) -> str:
    return _end_with_punct("Definition: " + definition.strip()) + "\n\n"


def example_part(kind: str, k: int, ex: Example, add_explanation: bool) -> str:
    """`kind` is "Positive" or "Negative"; `k` is 1-based."""
    s = _end_with_punct(f" {kind} Example {k} -\nInput: {ex.input.strip()}") + "\n"
    s = _end_with_punct(s + f" Output: {ex.output.strip()}") + "\n"
    if add_explanation and ex.explanation is not None:
        s = _end_with_punct(s + f" Explanation: {ex.explanation.strip()}") + "\n"
    return s + "\n"


@dataclass(frozen=True)
class Encoded:
    source: str
    input_ids: list[int] | None = None
    truncated: bool = False
