"""An embedded default dataset: small, seeded, NI-format tasks that a tiny T5 can learn on a CPU.

`generate(out_dir)` writes a complete data root in the Super-NaturalInstructions layout::

    OUT/tasks/task90NN_synthetic_<name>.json
    OUT/splits/default/{train,dev,test}_tasks.txt
    OUT/synthetic.json                          (what generated it: version, seed, sizes)

so a fresh clone trains and evaluates end to end with no download. It is Tk-Instruct in miniature, sized so a
tiny T5 learns it in a few CPU minutes. Every input is two to four words of one group (animals, colours, fruits,
tools); a task asks for the group's name, for the place where such things are found (farm, rainbow, orchard,
shed), or for the number of words. Some definitions say which answer they want, in several phrasings; others
are underspecified ("answer in the same way as the examples do") and each of those is shared by a group task and
a place task with the same example inputs, so only the demonstrations tell them apart. The four test tasks are
unseen phrasings: two name their answer (solvable from the definition alone), two are underspecified (solvable
only from the demonstrations), so a model trained with definition + demonstrations should beat one trained with
the definition only, and both should beat copying the demonstration's output or the input.

The files carry some of the real data's quirks so loaders are exercised: one Definition is a plain string,
one task's examples have no explanation, the counting task's outputs are JSON numbers, one task has instances
without an id, and one test task has two references per instance. The same seed always gives byte-identical
files.

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

VERSION = 2
TRACK = "default"
MIN_EVAL_INSTANCES = 100  # a test task is scored on its first 100 instances (reference.md section 1)
CACHE_ENV = "TK_DATA_CACHE"
DEFAULT_DATA_DIR = f"~/.cache/tk-lab/synthetic-v{VERSION}"
MANIFEST = "synthetic.json"
BALANCED_BLOCK = 20  # divides MIN_EVAL_INSTANCES and is a multiple of the number of groups

# ---------------------------------------------------------------------------------------------- vocabulary

GROUPS: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "cow", "horse", "bird", "fish", "duck", "goat", "pig", "sheep"),
    "colours": ("red", "blue", "green", "yellow", "black", "white", "pink", "brown"),
    "fruits": ("apple", "pear", "plum", "grape", "lemon", "mango", "peach", "cherry", "banana"),
    "tools": ("hammer", "saw", "drill", "knife", "rope", "ladder", "brush", "shovel"),
}
GROUP_NAMES = tuple(GROUPS)
SINGULAR = {"animals": "animal", "colours": "colour", "fruits": "fruit", "tools": "tool"}
# Where things of each group are found: the second mapping, over the same inputs as the group names.
PLACES = {"animals": "farm", "colours": "rainbow", "fruits": "orchard", "tools": "shed"}

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


def _group_words(rng: random.Random, label: str | None) -> tuple[str, list[str]]:
    """The input distribution of every task: 2 to 4 distinct words of one group (`label`, else drawn)."""
    group = label if label is not None else rng.choice(GROUP_NAMES)
    return group, rng.sample(GROUPS[group], rng.randint(2, 4))


def _other(group: str) -> str:
    return GROUP_NAMES[(GROUP_NAMES.index(group) + 1) % len(GROUP_NAMES)]


def group_name(rng: random.Random, label: str | None) -> Item:
    group, words = _group_words(rng, label)
    wrong = _other(group)
    return Item(
        ", ".join(words), [group],
        f"{', '.join(words)} are all {group}.",
        wrong, f"None of the words are {wrong}.",
    )


def group_title(rng: random.Random, label: str | None) -> Item:
    group, words = _group_words(rng, label)
    return Item(
        ", ".join(words), [group, SINGULAR[group]],
        f"Every word names one of the {group}, so the title is {_q(group)}.",
        words[0], "The title repeats one word of the list instead of naming the group.",
    )


def place(rng: random.Random, label: str | None) -> Item:
    group, words = _group_words(rng, label)
    wrong = PLACES[_other(group)]
    return Item(
        ", ".join(words), [PLACES[group]],
        f"{', '.join(words)} are {group}, and the place of {group} is the {PLACES[group]}.",
        wrong, f"The words are {group}; the {wrong} is the place of {_other(group)}.",
    )


def count_words(rng: random.Random, label: str | None) -> Item:
    group, words = _group_words(rng, label)
    n = len(words)
    return Item(
        ", ".join(words), [n],  # a JSON number, as in some real NI files
        f"The words are {', '.join(words)}: {n} in all.",
        str(n + 1), f"The input has {n} words, not {n + 1}.",
    )


@dataclass(frozen=True)
class Family:
    number: int
    slug: str
    split: str  # train / dev / test
    category: str
    definition: str
    make: Make
    labels: tuple[str, ...] = GROUP_NAMES  # the balanced labels (groups); positive examples cycle them
    inputs: str = ""  # families with the same key get the very same instance inputs
    plain_definition: bool = False  # quirk: Definition as a plain string instead of a list
    no_explanations: bool = False  # quirk: examples without "explanation"
    missing_ids: bool = False  # quirk: every 7th instance has no "id"

    @property
    def name(self) -> str:
        return f"task{self.number}_synthetic_{self.slug}"


GROUP_DEFS = (
    "In this task, you are given a few words from one group: animals, colours, fruits or tools. Name the group.",
    "Which group do the given words belong to? Answer animals, colours, fruits or tools.",
    "Classify the words into their group and write the name of the group.",
)
PLACE_DEFS = (
    "In this task, you are given a few things of one kind. Say where such things are found: farm, rainbow, "
    "orchard or shed.",
    "Where would you find the given things? Answer farm, rainbow, orchard or shed.",
    "Write the place where the given things belong.",
)
# Underspecified definitions: each is shared by a group-name task and a place task, so only the examples tell
# which answer is wanted (as in real NI, where some definitions lean on the demonstrations).
VAGUE_DEFS = (
    "Answer in the same way as the examples do.",
    "Look at the examples and give the kind of answer they give.",
    "Respond to the input as the positive examples show.",
    "Follow the examples: write what they would write for this input.",
)
TEST_VAGUE_DEF = "The examples show what to write. Write the same kind of answer for the new input."

FAMILIES: tuple[Family, ...] = (
    Family(9001, "word_group_classification", "train", "Text Categorization", GROUP_DEFS[0], group_name,
           inputs="words-0"),
    Family(9002, "which_group", "train", "Text Categorization", GROUP_DEFS[1], group_name, inputs="words-1",
           plain_definition=True),
    Family(9003, "group_naming", "train", "Text Categorization", GROUP_DEFS[2], group_name, inputs="words-2"),
    Family(9004, "where_found", "train", "Text Categorization", PLACE_DEFS[0], place, inputs="words-0"),
    Family(9005, "which_place", "train", "Text Categorization", PLACE_DEFS[1], place, inputs="words-1",
           no_explanations=True),
    Family(9006, "place_naming", "train", "Text Categorization", PLACE_DEFS[2], place, inputs="words-2"),
    *(
        Family(9007 + 2 * k + j, f"{('group', 'place')[j]}_by_example_{k + 1}", "train", "Text Categorization",
               VAGUE_DEFS[k], (group_name, place)[j], inputs=f"vague-{k}", missing_ids=(k, j) == (1, 1))
        for k in range(len(VAGUE_DEFS)) for j in range(2)
    ),
    Family(9015, "count_words", "train", "Program Execution",
           "Count the words in the input and answer with a number.", count_words, inputs="words-3"),
    Family(9016, "kind_of_things", "train", "Text Categorization",
           "Tell what kind of things the words are: animals, colours, fruits or tools.", group_name,
           inputs="words-3"),
    Family(9017, "group_of_words", "dev", "Text Categorization",
           "Give the group that all the words belong to.", group_name, inputs="dev"),
    Family(9018, "place_by_example", "dev", "Text Categorization", "Do what the examples do.", place,
           inputs="dev"),
    Family(9019, "word_list_title_generation", "test", "Title Generation",
           "Write a one-word title for the list that names the group of its words.", group_title,
           inputs="test"),
    Family(9020, "place_of_things", "test", "Keyword Tagging",
           "Name the place that the listed things come from.", place, inputs="test"),
    Family(9021, "group_title_by_example", "test", "Title Generation", TEST_VAGUE_DEF, group_name,
           inputs="test-vague"),
    Family(9022, "place_by_example_test", "test", "Keyword Tagging", TEST_VAGUE_DEF, place,
           inputs="test-vague"),
)


# ---------------------------------------------------------------------------------------------- task files


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))  # str seeds are stable across runs


def _balanced_labels(rng: random.Random, labels: Sequence[str], n: int) -> list[str]:
    """`n` labels in blocks of 20, each block balanced and shuffled, so the first 20 (what the debug sweep
    scores) and the first 100 are balanced."""
    out: list[str] = []
    while len(out) < n:
        size = min(BALANCED_BLOCK, n - len(out))
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
    demo_labels = [fam.labels[i % len(fam.labels)] for i in range(n_pos + 2)]
    demos = _items(fam, _rng(seed, key, "examples"), demo_labels)
    labels = _balanced_labels(_rng(seed, fam.name, "labels"), fam.labels, n)
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
    """Where the default synthetic data lives: `$TK_DATA_CACHE`, else ~/.cache/tk-lab/synthetic-v{VERSION}."""
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
