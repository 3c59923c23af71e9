"""An embedded default dataset: small, seeded, NI-format tasks that a tiny T5 can learn on a CPU.

`generate(out_dir)` writes a complete data root in the Super-NaturalInstructions layout::

    OUT/tasks/task90NN_synthetic_<name>.json
    OUT/splits/default/{train,dev,test}_tasks.txt
    OUT/synthetic.json                          (what generated it: version, seed, sizes)

so a fresh clone trains and evaluates end to end with no download. Every task is a short string or word
manipulation over a vocabulary of a few dozen common English words. Several tasks share one input
distribution (the same word lists) but ask for different outputs, so a model has to read the Definition.
Test tasks are unseen at training time; three of the four are siblings of a training task (same skill,
differently worded definition), the fourth (antonym analogies) needs two training skills combined.

The files carry some of the real data's quirks so loaders are exercised: one Definition is a plain string,
one task's examples have no explanation, the counting task's outputs are JSON numbers, and one task has
instances without an id. The same seed always gives byte-identical files.

    python -m ni.synthetic OUT [--seed 0] [--num-instances 200] [--overwrite]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ni.errors import DataError

VERSION = 1
TRACK = "default"
MIN_EVAL_INSTANCES = 100  # a test task is scored on its first 100 instances (reference.md section 1)
CACHE_ENV = "TK_DATA_CACHE"
DEFAULT_DATA_DIR = f"~/.cache/tk-lab/synthetic-v{VERSION}"
MANIFEST = "synthetic.json"

# ---------------------------------------------------------------------------------------------- vocabulary

GROUPS: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "cow", "horse", "bird", "fish", "duck", "goat", "pig", "sheep"),
    "colours": ("red", "blue", "green", "yellow", "black", "white", "pink", "brown"),
    "fruits": ("apple", "pear", "plum", "grape", "lemon", "mango", "peach", "cherry", "banana"),
    "tools": ("hammer", "saw", "drill", "knife", "rope", "ladder", "brush", "shovel"),
}
THINGS = ("door", "table", "river", "house", "tree", "book", "chair", "window", "cup", "box")
# The mixed vocabulary of the word-list tasks: short and long words, so "longest" has an answer.
LIST_WORDS = tuple(sorted({w for ws in GROUPS.values() for w in ws} | set(THINGS)))
COLOURS = GROUPS["colours"]
NOUNS = ("cat", "dog", "bird", "duck", "goat", "ball", "car", "hat", "bag", "cup")  # none is in PLACES
VERBS = ("sleeps", "runs", "sits", "waits", "jumps")
PLACES = ("on the table", "in the box", "near the door", "under the tree", "by the river")

_PAIRS = (
    ("big", "small"), ("hot", "cold"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("light", "dark"), ("open", "closed"), ("wet", "dry"), ("early", "late"), ("full", "empty"),
    ("hard", "soft"), ("long", "short"), ("high", "low"), ("rich", "poor"), ("loud", "quiet"),
    ("good", "bad"), ("left", "right"), ("young", "old"), ("clean", "dirty"), ("thick", "thin"),
)
# Every word's acceptable opposites; a few words have two.
OPPOSITES: dict[str, tuple[str, ...]] = {
    **{a: (b,) for a, b in _PAIRS},
    **{b: (a,) for a, b in _PAIRS},
    "big": ("small", "little"),
    "small": ("big", "large"),
    "old": ("young", "new"),
}
# The usual colour of a thing; a rose may be red or pink.
THING_COLOUR: dict[str, tuple[str, ...]] = {
    "grass": ("green",), "leaf": ("green",), "frog": ("green",), "snow": ("white",), "milk": ("white",),
    "sky": ("blue",), "sea": ("blue",), "coal": ("black",), "crow": ("black",), "blood": ("red",),
    "tomato": ("red",), "banana": ("yellow",), "sun": ("yellow",), "lemon": ("yellow",),
    "rose": ("red", "pink"), "mud": ("brown",),
}

# ---------------------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Item:
    """One generated example of a family: its input, every acceptable output (the first is canonical),
    why the canonical output is right, and a plausible wrong output with why it is wrong."""

    input: str
    outputs: Sequence[str | int]
    why: str
    wrong: str
    why_wrong: str


Make = Callable[[random.Random, str | None], Item]  # (rng, requested label or None) -> Item


def _q(word: object) -> str:
    return f'"{word}"'


def _word_list(rng: random.Random) -> list[str]:
    """The input distribution shared by the word-list tasks: 3 to 6 distinct words."""
    return rng.sample(LIST_WORDS, rng.randint(3, 6))


def first_word(rng: random.Random, label: str | None) -> Item:
    words = _word_list(rng)
    return Item(
        " ".join(words), [words[0]],
        f"The list starts with {_q(words[0])}.",
        words[-1], f"{_q(words[-1])} is the last word of the list, not the first.",
    )


def last_word(rng: random.Random, label: str | None) -> Item:
    words = _word_list(rng)
    return Item(
        " ".join(words), [words[-1]],
        f"The list ends with {_q(words[-1])}.",
        words[0], f"{_q(words[0])} is the first word of the list, not the last.",
    )


def reverse_words(rng: random.Random, label: str | None) -> Item:
    words = _word_list(rng)
    return Item(
        " ".join(words), [" ".join(reversed(words))],
        f"Read from the end, the words are {', '.join(reversed(words))}.",
        " ".join(words), "The words are still in their original order.",
    )


def count_words(rng: random.Random, label: str | None) -> Item:
    words = _word_list(rng)
    n = len(words)
    return Item(
        " ".join(words), [n],  # a JSON number, as in some real NI files
        f"The words are {', '.join(words)}: {n} in all.",
        str(n + 1), f"The list has {n} words, not {n + 1}.",
    )


def longest_word(rng: random.Random, label: str | None) -> Item:
    words = _word_list(rng)
    most = max(len(w) for w in words)
    longest = [w for w in words if len(w) == most]
    shortest = min(words, key=len)
    return Item(
        " ".join(words), longest,
        f"{_q(longest[0])} has {most} letters, more than any other word or as many as the longest.",
        shortest, f"{_q(shortest)} is the shortest word, not the longest.",
    )


def antonym(rng: random.Random, label: str | None) -> Item:
    word = rng.choice(sorted(OPPOSITES))
    opp = OPPOSITES[word]
    return Item(
        word, list(opp),
        f"{_q(opp[0])} means the reverse of {_q(word)}.",
        word, "The answer repeats the given word instead of giving its opposite.",
    )


def _membership(rng: random.Random, label: str | None) -> Item:
    """A word list and a query word; `label` ("yes"/"no") says whether the query is in the list."""
    words = rng.sample(LIST_WORDS, rng.randint(3, 5))
    inside = label == "yes" if label is not None else rng.random() < 0.5
    query = rng.choice(words) if inside else rng.choice([w for w in LIST_WORDS if w not in words])
    answer, other = ("yes", "no") if inside else ("no", "yes")
    where = "is one of the listed words" if inside else "does not appear in the list"
    return Item(
        f"Words: {', '.join(words)}. Query: {query}", [answer],
        f"{_q(query)} {where}, so the answer is {_q(answer)}.",
        other, f"{_q(query)} {where}, so {_q(other)} is wrong.",
    )


def word_in_list(rng: random.Random, label: str | None) -> Item:
    return _membership(rng, label)


def membership_answerability(rng: random.Random, label: str | None) -> Item:
    return _membership(rng, label)


def colour_analogy(rng: random.Random, label: str | None) -> Item:
    a, b = rng.sample(sorted(THING_COLOUR), 2)
    while set(THING_COLOUR[a]) & set(THING_COLOUR[b]):  # different colours, so copying B is never right
        b = rng.choice(sorted(THING_COLOUR))
    ca, cb = THING_COLOUR[a][0], THING_COLOUR[b]
    return Item(
        f"{a} : {ca} :: {b} : ?", list(cb),
        f"{_q(ca)} is the colour of {a}, and {b} is usually {cb[0]}.",
        ca, f"{_q(ca)} is the colour of {a}, not of {b}.",
    )


def antonym_analogy(rng: random.Random, label: str | None) -> Item:
    a, b = rng.sample(sorted(OPPOSITES), 2)
    while b in OPPOSITES[a]:  # not the same pair
        b = rng.choice(sorted(OPPOSITES))
    oa, ob = OPPOSITES[a][0], OPPOSITES[b]
    return Item(
        f"{a} : {oa} :: {b} : ?", list(ob),
        f"{_q(oa)} is the opposite of {_q(a)}, and the opposite of {_q(b)} is {_q(ob[0])}.",
        oa, f"{_q(oa)} is the opposite of {_q(a)}, not of {_q(b)}.",
    )


def _group_list(rng: random.Random, label: str | None) -> tuple[str, list[str]]:
    group = label if label is not None else rng.choice(sorted(GROUPS))
    return group, rng.sample(GROUPS[group], rng.randint(3, 4))


def word_group(rng: random.Random, label: str | None) -> Item:
    group, words = _group_list(rng, label)
    other = sorted(g for g in GROUPS if g != group)[0]
    return Item(
        ", ".join(words), [group],
        f"{', '.join(words)} are all {group}.",
        other, f"None of the words are {other}.",
    )


def list_title(rng: random.Random, label: str | None) -> Item:
    group, words = _group_list(rng, label)
    return Item(
        ", ".join(words), [group, f"a list of {group}"],
        f"Every word names one of the {group}, so the title is {_q(group)}.",
        words[0], "The title repeats one word of the list instead of naming the group.",
    )


def _swap(rng: random.Random, colour: str, noun: str) -> tuple[str, str]:
    """Which word to replace and with what: the colour or the noun, by another of its kind."""
    if rng.random() < 0.5:
        return colour, rng.choice([c for c in COLOURS if c != colour])
    return noun, rng.choice([n for n in NOUNS if n != noun])


def _replace(text: str, old: str, new: str) -> str:
    """`text` with every whole word `old` replaced by `new`; a trailing "?" or "." stays in place."""
    words = text.split(" ")
    return " ".join(new + w[len(old):] if w.rstrip("?.") == old else w for w in words)


def replace_word(rng: random.Random, label: str | None) -> Item:
    colour, noun = rng.choice(COLOURS), rng.choice(NOUNS)
    sentence = f"the {colour} {noun} is {rng.choice(PLACES)}"
    old, new = _swap(rng, colour, noun)
    return Item(
        f"Sentence: {sentence}. Replace {old} with {new}.", [f"{_replace(sentence, old, new)}."],
        f"{_q(old)} becomes {_q(new)} and the other words stay.",
        f"{sentence}.", "The sentence is copied without making the replacement.",
    )


QUESTIONS = ("where is the {c} {n}?", "who saw the {c} {n}?", "is the {c} {n} {p}?", "why is the {c} {n} {p}?")


def question_rewriting(rng: random.Random, label: str | None) -> Item:
    colour, noun = rng.choice(COLOURS), rng.choice(NOUNS)
    question = rng.choice(QUESTIONS).format(c=colour, n=noun, p=rng.choice(PLACES))
    old, new = _swap(rng, colour, noun)
    return Item(
        f"Question: {question} Replace {old} with {new}.", [_replace(question, old, new)],
        f"{_q(old)} becomes {_q(new)} and the rest of the question stays the same.",
        question, "The question is copied without making the replacement.",
    )


ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")


def colour_entailment(rng: random.Random, label: str | None) -> Item:
    label = label or rng.choice(ENTAILMENT_LABELS)
    colour, noun = rng.choice(COLOURS), rng.choice(NOUNS)
    other_colour = rng.choice([c for c in COLOURS if c != colour])
    other_noun = rng.choice([n for n in NOUNS if n != noun])
    hypothesis = {
        "entailment": f"the {noun} is {colour}",
        "contradiction": f"the {noun} is {other_colour}",
        "neutral": f"the {other_noun} is {colour}",
    }[label]
    why = {
        "entailment": f"The premise says the {noun} is {colour}.",
        "contradiction": f"The {noun} is {colour}, so it cannot be {other_colour}.",
        "neutral": f"The premise says nothing about a {other_noun}.",
    }[label]
    wrong = {"entailment": "contradiction", "contradiction": "entailment", "neutral": "entailment"}[label]
    return Item(
        f"Premise: the {colour} {noun} {rng.choice(VERBS)}. Hypothesis: {hypothesis}.", [label],
        why, wrong, f"{why} The answer {_q(wrong)} is wrong.",
    )


def common_word(rng: random.Random, label: str | None) -> Item:
    words = rng.sample(LIST_WORDS, 5)
    shared, a, b = words[0], [words[0], *words[1:3]], [words[0], *words[3:5]]
    rng.shuffle(a)
    rng.shuffle(b)
    wrong = next(w for w in a if w != shared)
    return Item(
        f"List A: {' '.join(a)}. List B: {' '.join(b)}.", [shared],
        f"{_q(shared)} is the only word in both lists.",
        wrong, f"{_q(wrong)} is in List A but not in List B.",
    )


@dataclass(frozen=True)
class Family:
    number: int
    slug: str
    split: str  # train / dev / test
    category: str
    definition: str
    make: Make
    labels: tuple[str, ...] = ()  # the balanced labels of a classification task
    inputs: str = ""  # families with the same key get the very same instance inputs
    plain_definition: bool = False  # quirk: Definition as a plain string instead of a list
    no_explanations: bool = False  # quirk: examples without "explanation"
    missing_ids: bool = False  # quirk: every 7th instance has no "id"

    @property
    def name(self) -> str:
        return f"task{self.number}_synthetic_{self.slug}"


YES_NO = ("yes", "no")
GROUP_NAMES = tuple(sorted(GROUPS))

FAMILIES: tuple[Family, ...] = (
    Family(9001, "first_word", "train", "Keyword Tagging",
           "In this task, you are given a list of words separated by spaces. Your job is to return the first "
           "word of the list, exactly as it is written.", first_word, inputs="word-list"),
    Family(9002, "last_word", "train", "Keyword Tagging",
           "In this task, you are given a list of words separated by spaces. Return the last word of the "
           "list. Do not change the word in any way.", last_word, inputs="word-list"),
    Family(9003, "reverse_words", "train", "Program Execution",
           "You are given a sequence of words. Write the same words in reverse order, so the last word comes "
           "first and the first word comes last. Separate the words with single spaces.", reverse_words,
           inputs="word-list", plain_definition=True),
    Family(9004, "count_words", "train", "Program Execution",
           "Given a list of words separated by spaces, count how many words are in the list. Answer with a "
           "number written in digits.", count_words, inputs="word-list"),
    Family(9005, "antonyms", "train", "Word Semantics",
           "In this task, you are given an adjective or a direction word. Write its opposite, that is, a word "
           "with the reverse meaning.", antonym),
    Family(9006, "word_in_list", "train", "Text Matching",
           'You are given a list of words and a query word. Answer "yes" if the query word appears in the list '
           'and "no" if it does not.', word_in_list, labels=YES_NO),
    Family(9007, "colour_analogy", "train", "Word Analogy",
           'Two analogies are given in the form "A : B :: C : ?". B is the usual colour of the thing A. '
           "Replace the question mark with the usual colour of the thing C. Answer with one colour word.",
           colour_analogy),
    Family(9008, "word_group_classification", "train", "Text Categorization",
           "You are given a few words separated by commas. All of them belong to one group: animals, colours, "
           "fruits or tools. Classify the words and answer with the name of their group.", word_group,
           labels=GROUP_NAMES),
    Family(9009, "replace_word", "train", "Sentence Composition",
           "In this task, you are given a sentence and an instruction to replace one word with another. "
           "Rewrite the sentence with the replacement made and keep every other word the same.", replace_word,
           no_explanations=True),
    Family(9010, "colour_entailment", "train", "Textual Entailment",
           'Given a premise and a hypothesis, decide whether the premise entails the hypothesis. Answer '
           '"entailment" if the hypothesis must be true, "contradiction" if it must be false, and "neutral" if '
           "the premise does not tell.", colour_entailment, labels=ENTAILMENT_LABELS, missing_ids=True),
    Family(9011, "longest_word", "dev", "Keyword Tagging",
           "In this task, you are given a list of words. Find the longest word in the list, the one with the "
           "most letters. If several words are equally long, any of them is correct.", longest_word,
           inputs="word-list"),
    Family(9012, "common_word_extraction", "dev", "Overlap Extraction",
           "You are given two lists of words, List A and List B. Exactly one word appears in both lists. "
           "Extract that overlapping word.", common_word),
    Family(9013, "word_in_list_answerability", "test", "Answerability Classification",
           "Read the list of words and the query word that follows it. Can the query word be found among the "
           'listed words? Write "yes" when the query word is one of the listed words and "no" when it is '
           "missing from the list.", membership_answerability, labels=YES_NO),
    Family(9014, "antonym_analogy", "test", "Word Analogy",
           'Complete the analogy "A : B :: C : ?". B is the opposite of A. Replace the question mark with the '
           "word that is the opposite of C.", antonym_analogy),
    Family(9015, "word_list_title_generation", "test", "Title Generation",
           "You will be given a short list of words separated by commas, all from the same group. Generate a "
           "short title for the list: the title names the group the words belong to.", list_title,
           labels=GROUP_NAMES),
    Family(9016, "question_rewriting", "test", "Question Rewriting",
           "In this task, you are given a question and a replacement instruction. Rewrite the question by "
           "replacing the given word with the new word, keeping every other word unchanged.",
           question_rewriting),
)

# ---------------------------------------------------------------------------------------------- task files


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))  # str seeds are stable across runs


def _balanced_labels(rng: random.Random, labels: Sequence[str], n: int) -> list[str]:
    """`n` labels in blocks of 100, each block balanced and shuffled, so the first 100 are balanced."""
    out: list[str] = []
    while len(out) < n:
        size = min(MIN_EVAL_INSTANCES, n - len(out))
        block = [labels[i % len(labels)] for i in range(size)]
        rng.shuffle(block)
        out.extend(block)
    return out


def _items(fam: Family, rng: random.Random, labels: Sequence[str | None]) -> list[Item]:
    """One item per requested label; inputs are kept distinct while the input space allows it."""
    seen: set[str] = set()
    items = []
    for label in labels:
        for _ in range(50):
            item = fam.make(rng, label)
            if item.input not in seen:
                break
        seen.add(item.input)
        items.append(item)
    return items


def _example(item: Item, fam: Family, negative: bool) -> dict[str, Any]:
    out = item.wrong if negative else str(item.outputs[0])
    ex: dict[str, Any] = {"input": item.input, "output": out}
    if not fam.no_explanations:
        ex["explanation"] = item.why_wrong if negative else item.why
    return ex


def build_task(fam: Family, seed: int, num_instances: int) -> dict[str, Any]:
    """The task file of one family, in NI's field order."""
    key = fam.inputs or fam.name
    n = max(num_instances, MIN_EVAL_INSTANCES) if fam.split == "test" else num_instances
    n_pos = 3 + fam.number % 2
    demo_labels: list[str | None] = [fam.labels[i % len(fam.labels)] if fam.labels else None for i in range(n_pos + 2)]
    demos = _items(fam, _rng(seed, key, "examples"), demo_labels)
    labels: list[str | None] = [None] * n
    if fam.labels:
        labels = list(_balanced_labels(_rng(seed, fam.name, "labels"), fam.labels, n))
    ids = _rng(seed, fam.name, "ids")
    instances = []
    for i, item in enumerate(_items(fam, _rng(seed, key, "instances"), labels)):
        inst: dict[str, Any] = {"id": f"task{fam.number}-{ids.getrandbits(128):032x}"}
        if fam.missing_ids and i % 7 == 3:
            del inst["id"]
        inst.update(input=item.input, output=list(item.outputs))
        instances.append(inst)
    return {
        "Contributors": ["tk-lab synthetic generator"],
        "Source": ["synthetic"],
        "Categories": [fam.category],
        "Definition": fam.definition if fam.plain_definition else [fam.definition],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Synthetic"],
        "Positive Examples": [_example(d, fam, negative=False) for d in demos[:n_pos]],
        "Negative Examples": [_example(d, fam, negative=True) for d in demos[n_pos:]],
        "Instances": instances,
        "Instance License": ["Apache 2.0"],
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def _manifest(seed: int, num_instances: int) -> dict[str, Any]:
    return {
        "generator": "ni.synthetic",
        "version": VERSION,
        "seed": seed,
        "num_instances": num_instances,
        "tasks": {f.name: f.split for f in FAMILIES},
    }


def _write_root(root: Path, seed: int, num_instances: int) -> None:
    for fam in FAMILIES:
        path = root / "tasks" / f"{fam.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dumps(build_task(fam, seed, num_instances)), encoding="utf-8")
    for split in ("train", "dev", "test"):
        path = root / "splits" / TRACK / f"{split}_tasks.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{f.name}\n" for f in FAMILIES if f.split == split), encoding="utf-8")
    (root / MANIFEST).write_text(_dumps(_manifest(seed, num_instances)), encoding="utf-8")


def _non_empty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _refuse(out: Path) -> DataError:
    return DataError(
        f"{out}: already exists and is not empty; refusing to overwrite it",
        hint="Pass overwrite=True (--overwrite) or choose another directory.",
    )


def generate(
    out_dir: str | os.PathLike[str], *, seed: int = 0, num_instances: int = 200, overwrite: bool = False
) -> Path:
    """Write the synthetic data root to `out_dir` and return its path.

    Everything is written into a temp directory beside `out_dir` and renamed into place, so a reader never
    sees a half-written root. Test tasks get at least 100 instances whatever `num_instances` says.
    """
    if num_instances < 1:
        raise DataError(f"num_instances must be at least 1, got {num_instances}")
    out = Path(out_dir).expanduser().absolute()
    if _non_empty(out) and not overwrite:
        raise _refuse(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the root is ordinary shared data
        _write_root(tmp, seed, num_instances)
        _install(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first when `overwrite` (else refused)."""
    if _non_empty(out):
        if not overwrite:
            raise _refuse(out)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "data")
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old / "data", out)  # put the old root back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, out)  # onto nothing or an empty directory
    except OSError:  # someone else filled `out` in the meantime
        if overwrite:
            raise
        raise _refuse(out) from None


# ---------------------------------------------------------------------------------------------- default root


def default_data_root() -> Path:
    """Where the default synthetic data lives: `$TK_DATA_CACHE`, else ~/.cache/tk-lab/synthetic-v1."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_DATA_DIR).expanduser()


def _is_current(root: Path, seed: int = 0, num_instances: int = 200) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(manifest == _manifest(seed, num_instances))


def ensure_default_data() -> Path:
    """Generate the default data root once and return it. Idempotent; when two processes race, each writes
    its own temp directory and the loser keeps the winner's (identical) copy."""
    root = default_data_root()
    if _is_current(root):
        return root
    if _non_empty(root) and not (root / MANIFEST).is_file():
        raise DataError(
            f"{root}: exists, is not empty and is not a synthetic data root",
            hint=f"Remove it or point {CACHE_ENV} at another directory.",
        )
    stale = _non_empty(root)  # an older generator's output: ours to replace
    try:
        generate(root, overwrite=stale)
    except (DataError, OSError):
        if not _is_current(root):  # not a race lost to an identical copy
            raise
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ni.synthetic", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("out_dir", nargs="?", help=f"data root to write (default: {DEFAULT_DATA_DIR})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-instances", type=int, default=200)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.out_dir is None and args.seed == 0 and args.num_instances == 200 and not args.overwrite:
            root = ensure_default_data()
        else:
            root = generate(
                args.out_dir or default_data_root(), seed=args.seed, num_instances=args.num_instances,
                overwrite=args.overwrite,
            )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
