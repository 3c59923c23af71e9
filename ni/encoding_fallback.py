"""The original Tk-Instruct encoding algorithm: `ni.encoding.PromptEncoder` falls back to it for tokenizers
whose pieces do not add up, and tests and benchmarks compare the fast path against it (same sources and ids).

It re-tokenizes the whole growing prompt once per candidate example, then once more for the source, as the
original collator did.
"""

from __future__ import annotations

from typing import Any

from ni.data import Instance, Task
from ni.prompt import Encoded, Encoding, definition_part, example_part, input_part, task_name_part


def _fits(tokenizer: Any, text: str, limit: int | None) -> bool:
    return limit is None or len(tokenizer(text)["input_ids"]) <= limit


def fallback_encode(
    task: Task, instance: Instance, enc: Encoding, tokenizer: Any, max_source_length: int | None
) -> Encoded:
    task_input = input_part(instance.input)
    name = task_name_part(task.name) if enc.add_task_name else ""
    definition = definition_part(task.definition) if enc.add_task_definition else ""
    pos: list[str] = []
    for k, ex in enumerate(task.positive_examples[: enc.num_pos_examples], 1):
        s = example_part("Positive", k, ex, enc.add_explanation)
        if not _fits(tokenizer, definition + " ".join(pos) + s + task_input, max_source_length):
            break
        pos.append(s)
    neg: list[str] = []
    for k, ex in enumerate(task.negative_examples[: enc.num_neg_examples], 1):
        s = example_part("Negative", k, ex, enc.add_explanation)
        if not _fits(tokenizer, definition + " ".join(pos) + " ".join(neg) + s + task_input, max_source_length):
            break
        neg.append(s)
    source = name + definition + "".join(pos) + "".join(neg) + task_input
    ids = tokenizer(source)["input_ids"]
    truncated = max_source_length is not None and len(ids) > max_source_length
    if truncated:
        source = tokenizer.decode(ids[:max_source_length], skip_special_tokens=True)
    # The batch step of the original: re-tokenize the (possibly truncated) sources with truncation on.
    kwargs = {"max_length": max_source_length, "truncation": True} if max_source_length is not None else {}
    final = tokenizer(source, **kwargs)["input_ids"]
    return Encoded(source, list(final), truncated=truncated)
