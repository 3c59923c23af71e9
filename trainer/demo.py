"""`python -m trainer demo --model NAME_OR_PATH`: talk to a model in the terminal.

Reads a task definition, optional positive examples (input/output pairs; a blank input ends them) and an input,
builds the prompt with the project's `PromptEncoder` (the README's shape: "return the currency of the given
country" / India -> "Indian Rupee"), generates greedily and prints the answer. Ctrl-D (or a blank definition)
quits. `--once` is for scripts: one JSON object on stdin

    {"definition": "...", "positive_examples": [{"input": "...", "output": "..."}], "input": "..."}

and one JSON object on stdout: {"prompt": "...", "prediction": "..."}.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from ni.data import Example, Instance, Task
from ni.encoding import PromptEncoder, resolve_encoding
from ni.errors import ConfigError
from ni.synthetic import ensure_default_data
from trainer.hf import load_model, load_tokenizer, resolve_model_path

MAX_NEW_TOKENS = 128
DEFAULT_MAX_SOURCE_LENGTH = 1024


@dataclass
class Request:
    definition: str
    input: str
    positive_examples: list[Example] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any, source: str = "stdin") -> Request:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"definition", "positive_examples", "input"}
        if unknown:
            raise ConfigError(f"{source}: unknown key '{sorted(unknown)[0]}'",
                              hint="Valid keys: definition, positive_examples, input.")
        for key in ("definition", "input"):
            if not isinstance(data.get(key, ""), str):
                raise ConfigError(f"{source}: '{key}' must be a string")
        if "input" not in data:
            raise ConfigError(f"{source}: 'input' is missing")
        examples = data.get("positive_examples") or []
        if not isinstance(examples, list):
            raise ConfigError(f"{source}: 'positive_examples' must be a list of {{input, output}} objects")
        parsed = []
        for i, ex in enumerate(examples):
            if not (isinstance(ex, dict) and isinstance(ex.get("input"), str) and isinstance(ex.get("output"), str)):
                raise ConfigError(f"{source}: positive_examples[{i}] must be an object with string input and output")
            parsed.append(Example(ex["input"], ex["output"]))
        return cls(data.get("definition", ""), data["input"], parsed)

    def task(self) -> tuple[Task, Instance]:
        inst = Instance("demo-1", self.input, ())
        return Task("demo", self.definition, list(self.positive_examples), [], [inst]), inst


class Demo:
    """A model, its tokenizer and an encoder; `answer()` is one greedy generation."""

    def __init__(self, model_path: str, encoding: str, max_source_length: int = DEFAULT_MAX_SOURCE_LENGTH,
                 max_new_tokens: int = MAX_NEW_TOKENS):
        resolve_encoding(encoding)  # a bad name fails before the model loads
        self.model = load_model(model_path)
        self.model.eval()
        self.tokenizer = load_tokenizer(model_path)
        self.encoder = PromptEncoder(encoding, self.tokenizer, max_source_length)
        self.max_new_tokens = max_new_tokens

    def answer(self, req: Request) -> tuple[str, str]:
        """(prompt, prediction)."""
        import torch

        task, inst = req.task()
        enc = self.encoder.encode(task, inst)
        assert enc.input_ids is not None
        ids = torch.tensor([enc.input_ids], dtype=torch.long)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        return enc.source, self.tokenizer.decode(out[0], skip_special_tokens=True)


def run_once(demo: Demo, stdin: IO[str], stdout: IO[str]) -> int:
    text = stdin.read()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"stdin: not JSON: {e}",
                          hint='Send one object: {"definition": ..., "positive_examples": [...], "input": ...}') from None
    prompt, prediction = demo.answer(Request.from_json(data))
    stdout.write(orjson.dumps({"prompt": prompt, "prediction": prediction}).decode() + "\n")
    stdout.flush()
    return 0


def interactive(demo: Demo, read: Callable[[str], str] = input, write: Callable[[str], None] = print,
                show_prompt: bool = False) -> int:
    """The loop: definition, examples, input -> answer; then more inputs for the same task or a new task."""
    write(f"Talking to {demo.model.name_or_path} (encoding {demo.encoder.name}). Ctrl-D quits.")
    try:
        while True:
            write("")
            definition = read("Task definition (blank to quit): ").strip()
            if not definition:
                return 0
            examples: list[Example] = []
            while True:
                k = len(examples) + 1
                ex_in = read(f"Example {k} input (blank: no more examples): ").strip()
                if not ex_in:
                    break
                examples.append(Example(ex_in, read(f"Example {k} output: ").strip()))
            while True:
                text = read("Input (blank: new task): ").strip()
                if not text:
                    break
                prompt, prediction = demo.answer(Request(definition, text, examples))
                if show_prompt:
                    write("--- prompt ---\n" + prompt + "\n--------------")
                write(f"Answer: {prediction}")
    except EOFError:
        write("")
        return 0


def main_demo(model: str, encoding: str, once: bool, show_prompt: bool = False,
              max_new_tokens: int = MAX_NEW_TOKENS, max_source_length: int = DEFAULT_MAX_SOURCE_LENGTH) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    demo = Demo(resolve_model_path(model, _data_root()) if model == "tiny" else model, encoding,
                max_source_length, max_new_tokens)
    if once:
        return run_once(demo, sys.stdin, sys.stdout)
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 -- line editing and history for input()
    return interactive(demo, show_prompt=show_prompt)


def _data_root() -> str:
    return str(ensure_default_data())
