"""Super-NaturalInstructions data: task files, split files and the sampling rules of the original.

A data root has the NI repository layout::

    ROOT/tasks/<task>.json
    ROOT/splits/<track>/{train,dev,test}_tasks.txt     (dev is optional)

Sampling (reference.md section 1): a test task contributes its first 100 instances (the dataset authors put a
label-balanced 100 first); `max_instances` then keeps a random subset of those. A train task contributes a random
`max_instances` of all its instances. The random subset is drawn per task from a generator seeded with
(seed, task name), so it does not depend on the order or number of other tasks; kept instances stay in file order.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ni.errors import DataError
from ni.names import bad_name

TRACKS = ("default", "xlingual")
SPLITS = ("train", "dev", "test")
EVAL_INSTANCES_PER_TASK = 100  # the first 100 instances of an evaluation task are its test set
# Upstream renamed this task; predictions and metrics use the old name (reference.md section 3).
TASK_RENAMES = {"task121_atomic_question_rewriting": "task121_zest_question_rewriting"}
Keep = Callable[[int], Sequence[int]]  # number of instances in a file -> the indices to read, ascending


@dataclass(frozen=True)
class Example:
    """A positive or negative demonstration of a task."""

    input: str
    output: str
    explanation: str | None = None


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    input: str
    outputs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "input": self.input, "output": list(self.outputs)}


@dataclass
class Task:
    name: str
    definition: str
    positive_examples: list[Example]
    negative_examples: list[Example]
    instances: list[Instance]
    categories: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # every other field of the file, untouched

    @property
    def category(self) -> str:
        return self.categories[0] if self.categories else ""

    @property
    def category_key(self) -> str:
        """The metric group key: first category, lower-cased, words joined by `_`."""
        return category_key(self.category)

    def header(self) -> dict[str, Any]:
        """The task's fields in the original's prediction-file shape (everything except the instances)."""
        out: dict[str, Any] = {"Task": self.name, "Definition": [self.definition], "Categories": self.categories}
        out["Positive Examples"] = [_example_json(e) for e in self.positive_examples]
        out["Negative Examples"] = [_example_json(e) for e in self.negative_examples]
        out.update(self.extra)
        return out


def category_key(category: str) -> str:
    return "_".join(category.lower().split())


def _example_json(e: Example) -> dict[str, str]:
    d = {"input": e.input, "output": e.output}
    if e.explanation is not None:
        d["explanation"] = e.explanation
    return d


def as_text(value: Any) -> str:
    """Real NI files hold numbers (and the odd bool or null) where strings belong: coerce scalars to text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(f"expected text, got {type(value).__name__}")


class _FieldReader:
    """Reads fields of one task file; every error names the file and the field path."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, msg: str) -> DataError:
        return DataError(f"{self.path}: field '{where}': {msg}")

    def text(self, obj: dict[str, Any], key: str, where: str) -> str:
        if key not in obj:
            raise self.fail(f"{where}.{key}" if where else key, "missing")
        try:
            return as_text(obj[key])
        except TypeError as e:
            raise self.fail(f"{where}.{key}" if where else key, str(e)) from None

    def examples(self, raw: dict[str, Any], key: str) -> list[Example]:
        items = raw.get(key) or []
        if not isinstance(items, list):
            raise self.fail(key, f"expected a list, got {type(items).__name__}")
        out = []
        for i, item in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise self.fail(where, f"expected an object, got {type(item).__name__}")
            expl = item.get("explanation")
            out.append(
                Example(
                    input=self.text(item, "input", where),
                    output=self.text(item, "output", where),
                    explanation=None if expl is None else self.text(item, "explanation", where),
                )
            )
        return out

    def instances(self, raw: dict[str, Any], task_name: str, keep: Keep | None = None,
                  shared: dict[tuple[str, ...], tuple[str, ...]] | None = None) -> list[Instance]:
        """The instances at the indices `keep(count)` chooses (all when None), in file order. Only those are
        read and checked: a split keeps a sample of a task's instances, and building the rest is most of the cost.

        `shared` maps reference tuples to one kept copy: classification tasks repeat a few labels thousands of
        times, and a split keeps one tuple of them instead of one per instance."""
        shared = {} if shared is None else shared
        if "Instances" not in raw:
            raise self.fail("Instances", "missing")
        items = raw["Instances"]
        if not isinstance(items, list):
            raise self.fail("Instances", f"expected a list, got {type(items).__name__}")
        chosen = range(len(items)) if keep is None else keep(len(items))
        out: list[Instance] = []
        missing_id: list[int] = []
        for i in chosen:
            text, outputs, iid = self._instance(items[i], i)
            if iid is None:
                missing_id.append(len(out))
                iid = ""
            kept = shared.get(outputs)
            if kept is None:  # keyed by the copy: a key made of the parsed strings would pin the parsed file
                kept = tuple(_own(o) for o in outputs)
                shared[kept] = kept
            out.append(Instance(id=_own(iid), input=_own(text), outputs=kept))
        if missing_id:  # derived ids count earlier duplicates, so walk the file up to the last one needed
            wanted = {chosen[k]: k for k in missing_id}
            seen: dict[str, int] = {}
            for i in range(max(wanted) + 1):
                item = items[i]
                if i in wanted or (isinstance(item, dict) and item.get("id") in (None, "")):
                    text, outputs, _ = self._instance(item, i)
                    iid = derive_instance_id(task_name, text, outputs, seen)
                    if i in wanted:
                        k = wanted[i]
                        out[k] = Instance(id=iid, input=out[k].input, outputs=out[k].outputs)
        return out

    def _instance(self, item: Any, i: int) -> tuple[str, tuple[str, ...], str | None]:
        if type(item) is dict:  # the common shape, checked without building error paths
            text, refs, iid = item.get("input"), item.get("output"), item.get("id")
            if type(text) is str and type(refs) is list and refs and all(type(o) is str for o in refs) and (
                    type(iid) is str or iid is None):
                return text, tuple(refs), iid or None
        where = f"Instances[{i}]"
        if not isinstance(item, dict):
            raise self.fail(where, f"expected an object, got {type(item).__name__}")
        text = self.text(item, "input", where)
        if "output" not in item:
            raise self.fail(f"{where}.output", "missing")
        raw_out = item["output"]
        try:
            outputs = tuple(as_text(o) for o in raw_out) if isinstance(raw_out, list) else (as_text(raw_out),)
        except TypeError as e:
            raise self.fail(f"{where}.output", str(e)) from None
        if not outputs:
            raise self.fail(f"{where}.output", "empty list of references")
        iid = item.get("id")
        return text, outputs, None if iid is None or iid == "" else as_text(iid)


def _own(text: str) -> str:
    """A copy of `text` made now, while the parsed file is still alive: the copies of a file's kept instances sit
    together in memory, while the originals would pin the allocator's pools of the whole file after it is freed."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")


def _malloc_trim() -> Callable[[], None]:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: libc is among them
    except (OSError, AttributeError):  # not glibc: nothing to release by hand
        return lambda: None

    def release() -> None:
        trim(0)
    return release


release_freed_memory = _malloc_trim()
"""Give the pages of a freed parsed file back to the system (glibc's malloc_trim). A task file parses into
megabytes of short-lived objects between the kept copies of earlier files; without this the allocator keeps
those pages resident and the next file grows the heap around them."""


def derive_instance_id(task_name: str, text: str, outputs: Sequence[str], seen: dict[str, int]) -> str:
    """A stable id for an instance that has none: a hash of its content (so it survives re-ordering),
    with an occurrence suffix when the same content appears twice in one task."""
    digest = hashlib.sha1(orjson.dumps([task_name, text, list(outputs)])).hexdigest()[:32]
    prefix = task_name.split("_", 1)[0]
    n = seen.get(digest, 0)
    seen[digest] = n + 1
    return f"{prefix}-{digest}" if n == 0 else f"{prefix}-{digest}-{n}"


def parse_task(
    path: str | os.PathLike[str], data: bytes | None = None, name: str | None = None, keep: Keep | None = None,
    shared_outputs: dict[tuple[str, ...], tuple[str, ...]] | None = None,
) -> Task:
    """Parse one task file (NI schema). Raises DataError naming the file and the field.

    `keep(count) -> indices` reads only those instances (see `_FieldReader.instances`); by default all.
    `shared_outputs` lets the files of one split share identical reference tuples."""
    path = Path(path)
    name = name or path.stem
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: task file not found") from None
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object at the top level, got {type(raw).__name__}")
    r = _FieldReader(path)
    if "Definition" not in raw:
        raise r.fail("Definition", "missing")
    d = raw["Definition"]
    try:
        definition = as_text(d[0]) if isinstance(d, list) and d else ("" if isinstance(d, list) else as_text(d))
    except TypeError as e:
        raise r.fail("Definition", str(e)) from None
    cats = raw.get("Categories") or []
    categories = [as_text(c) for c in cats] if isinstance(cats, list) else [as_text(cats)]
    known = {"Definition", "Positive Examples", "Negative Examples", "Instances", "Categories", "Instruction Source"}
    return Task(
        name=name,
        definition=definition,
        positive_examples=r.examples(raw, "Positive Examples"),
        negative_examples=r.examples(raw, "Negative Examples"),
        instances=r.instances(raw, name, keep, shared_outputs),
        categories=categories,
        extra={k: v for k, v in raw.items() if k not in known},
    )


def split_path(root: str | os.PathLike[str], track: str, split: str) -> Path:
    if track not in TRACKS:
        raise DataError(f"unknown track '{track}'", hint=f"Valid tracks: {', '.join(TRACKS)}.")
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'", hint=f"Valid splits: {', '.join(SPLITS)}.")
    return Path(root) / "splits" / track / f"{split}_tasks.txt"


def read_split(root: str | os.PathLike[str], track: str, split: str) -> list[str] | None:
    """Task names of a split, in file order; None when the split file does not exist (e.g. no dev set)."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise DataError(f"{root}: data root not found", hint="Point --data at a directory with tasks/ and splits/.")
    path = split_path(root, track, split)
    if not path.is_file():
        return None
    names = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})", hint="Save the split file as UTF-8.") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if bad_name(name):
            raise DataError(f"{path}:{lineno}: task name: {bad_name(name)}",
                            hint="Each line names a file tasks/<name>.json, e.g. task001_quoref_question_generation.")
        if not (root_path / "tasks" / f"{name}.json").is_file():
            raise DataError(f"{path}:{lineno}: task '{name}' has no file tasks/{name}.json under {root}")
        names.append(name)
    return names


def sample_indices(task_name: str, split: str, count: int, max_instances: int | None, seed: int) -> Sequence[int]:
    """The indices of the instances a task of `count` instances contributes to a split (module docstring)."""
    pool = min(count, EVAL_INSTANCES_PER_TASK) if split == "test" else count
    if max_instances is None or max_instances < 0 or max_instances >= pool:
        return range(pool)
    rng = random.Random(f"{seed}:{split}:{task_name}")
    return sorted(rng.sample(range(pool), max_instances))


def select_instances(task: Task, split: str, max_instances: int | None, seed: int) -> list[Instance]:
    """The instances a task contributes to a split (see the module docstring)."""
    return [task.instances[i] for i in sample_indices(task.name, split, len(task.instances), max_instances, seed)]


@dataclass
class SplitData:
    """The tasks of one split with the instances each contributes, and the rule that chose them.

    A task loaded through a split holds only its selected instances (`task.instances == instances[k]`)."""

    root: Path
    track: str
    split: str
    tasks: list[Task]
    instances: list[list[Instance]]
    max_instances_per_task: int | None = None
    seed: int = 42
    task_limit: int | None = None

    def __iter__(self) -> Iterator[tuple[Task, Instance]]:
        for task, insts in zip(self.tasks, self.instances, strict=True):
            for inst in insts:
                yield task, inst

    def __len__(self) -> int:
        return sum(len(x) for x in self.instances)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def ref(self) -> SplitRef:
        return SplitRef(self.root, self.track, self.split, self.max_instances_per_task, self.seed, self.task_limit)

    def selection(self) -> dict[str, Any]:
        return self.ref().selection()


@dataclass(frozen=True)
class SplitRef:
    """A split named but not loaded: enough to find its task files and to load it when needed."""

    root: Path
    track: str
    split: str
    max_instances_per_task: int | None = None
    seed: int = 42
    task_limit: int | None = None

    def selection(self) -> dict[str, Any]:
        """What chose the instances, apart from the files themselves (part of every cache key of the split)."""
        return {"track": self.track, "split": self.split, "max_instances_per_task": self.max_instances_per_task,
                "seed": self.seed, "task_limit": self.task_limit}

    def task_names(self) -> list[str]:
        names = read_split(self.root, self.track, self.split)
        if names is None:
            raise DataError(f"{split_path(self.root, self.track, self.split)}: split file not found")
        return names if self.task_limit is None else names[: self.task_limit]

    def task_file(self, name: str) -> Path:
        return Path(self.root) / "tasks" / f"{name}.json"

    def load(self) -> SplitData:
        return require_split(self.root, self.track, self.split, max_instances_per_task=self.max_instances_per_task,
                             seed=self.seed, task_limit=self.task_limit)


def load_split(
    root: str | os.PathLike[str],
    track: str = "default",
    split: str = "test",
    max_instances_per_task: int | None = None,
    seed: int = 42,
    task_limit: int | None = None,
) -> SplitData | None:
    """Load a split of a data root. None when the split file does not exist.

    `max_instances_per_task` is the original's `max_num_instances_per_task` for train and
    `max_num_instances_per_eval_task` for dev/test. `task_limit` keeps the first N tasks of the split file
    (the original's number-of-tasks experiments). Task files are read one at a time and only the selected
    instances are kept, so memory follows the sample, not the files.
    """
    names = read_split(root, track, split)
    if names is None:
        return None
    if task_limit is not None:
        names = names[:task_limit]
    tasks = []
    shared_outputs: dict[tuple[str, ...], tuple[str, ...]] = {}
    collecting = gc.isenabled()
    gc.disable()  # parsing makes no cycles; collections would walk the kept sample once per few files
    try:
        for name in names:

            def keep(count: int, name: str = name) -> Sequence[int]:
                return sample_indices(name, split, count, max_instances_per_task, seed)

            release_freed_memory()
            tasks.append(parse_task(Path(root) / "tasks" / f"{name}.json", keep=keep, shared_outputs=shared_outputs))
    finally:
        if collecting:
            gc.enable()
    return SplitData(root=Path(root), track=track, split=split, tasks=tasks, instances=[t.instances for t in tasks],
                     max_instances_per_task=max_instances_per_task, seed=seed, task_limit=task_limit)


def require_split(root: str | os.PathLike[str], track: str, split: str, **kwargs: Any) -> SplitData:
    data = load_split(root, track, split, **kwargs)
    if data is None:
        raise DataError(f"{split_path(root, track, split)}: split file not found")
    return data
