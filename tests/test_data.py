"""NI task files, split files and the sampling rules (reference.md section 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ni.data import Instance, load_split, parse_task, read_split, require_split, select_instances
from ni.errors import DataError


def write_task(root: Path, name: str, body: dict) -> Path:
    path = root / "tasks" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def write_split(root: Path, track: str, split: str, names: list[str]) -> None:
    path = root / "splits" / track / f"{split}_tasks.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(names) + "\n")


def quirky_task(n: int = 150) -> dict:
    return {
        "Definition": "A plain-string definition",
        "Positive Examples": [{"input": "1 + 1", "output": 2}],  # no explanation, number output
        "Instances": [{"input": f"in {i}", "output": [i, f"{i}.0"]} for i in range(n)],  # no ids, numbers
    }


def test_real_files_parse(ni_sample: Path) -> None:
    data = require_split(ni_sample, "default", "train")
    assert len(data.tasks) == 58
    assert all(t.definition and t.instances for t in data.tasks)
    copa = parse_task(ni_sample / "tasks" / "task1393_superglue_copa_text_completion.json")
    assert copa.category_key == "cause_effect_classification"
    assert copa.positive_examples[0].output == "A"


def test_quirks_are_coerced(tmp_path: Path) -> None:
    task = parse_task(write_task(tmp_path, "task9_q", quirky_task()))
    assert task.definition == "A plain-string definition"
    assert task.positive_examples[0].output == "2" and task.positive_examples[0].explanation is None
    assert task.instances[3].outputs == ("3", "3.0")
    assert task.negative_examples == [] and task.categories == []


def test_derived_ids_are_stable_and_unique(tmp_path: Path) -> None:
    body = quirky_task(5)
    body["Instances"].append(dict(body["Instances"][0]))  # same content twice
    ids = [i.id for i in parse_task(write_task(tmp_path, "task9_q", body)).instances]
    assert len(set(ids)) == len(ids) and ids[0].startswith("task9-")
    body["Instances"].reverse()  # content-derived: survives re-ordering
    again = [i.id for i in parse_task(write_task(tmp_path, "task9_q", body)).instances]
    assert set(again) == set(ids)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"Definition": ["x"], "Instances": [}', "line 1 column"),
        ('{"Instances": []}', "field 'Definition': missing"),
        ('{"Definition": ["x"]}', "field 'Instances': missing"),
        ('{"Definition": ["x"], "Instances": [{"input": "a"}]}', "field 'Instances[0].output': missing"),
        ('{"Definition": ["x"], "Instances": [{"input": ["a"], "output": []}]}', "field 'Instances[0].input'"),
        ('{"Definition": "x", "Positive Examples": [{"input": "a"}], "Instances": []}',
         "field 'Positive Examples[0].output': missing"),
    ],
)
def test_malformed_task_names_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "tasks" / "task1_bad.json"
    path.parent.mkdir()
    path.write_text(body)
    with pytest.raises(DataError) as e:
        parse_task(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_split_naming_a_missing_task(tmp_path: Path) -> None:
    write_task(tmp_path, "task1_a", quirky_task())
    write_split(tmp_path, "default", "test", ["task1_a", "", "task2_missing"])
    with pytest.raises(DataError, match=r"test_tasks.txt:3: task 'task2_missing' has no file"):
        read_split(tmp_path, "default", "test")


def test_missing_dev_split_is_none_and_missing_root_errors(tmp_path: Path) -> None:
    write_task(tmp_path, "task1_a", quirky_task())
    assert load_split(tmp_path, "default", "dev") is None
    with pytest.raises(DataError, match="split file not found"):
        require_split(tmp_path, "default", "dev")
    with pytest.raises(DataError, match="data root not found"):
        read_split(tmp_path / "nope", "default", "test")


def test_test_split_takes_first_100_then_a_seeded_subset(tmp_path: Path) -> None:
    task = parse_task(write_task(tmp_path, "task1_a", quirky_task(250)))
    assert select_instances(task, "test", None, 0) == task.instances[:100]
    sub = select_instances(task, "test", 10, seed=1)
    assert len(sub) == 10 and set(sub) <= set(task.instances[:100])
    assert [task.instances.index(i) for i in sub] == sorted(task.instances.index(i) for i in sub)  # file order
    assert sub == select_instances(task, "test", 10, seed=1)
    assert sub != select_instances(task, "test", 10, seed=2)
    train = select_instances(task, "train", 120, seed=1)
    assert len(train) == 120 and any(task.instances.index(i) >= 100 for i in train)
    assert select_instances(task, "train", None, 0) == task.instances


def test_sampling_does_not_depend_on_other_tasks(tmp_path: Path) -> None:
    for name in ("task1_a", "task2_b"):
        write_task(tmp_path, name, quirky_task(120))
    write_split(tmp_path, "default", "train", ["task1_a", "task2_b"])
    write_split(tmp_path, "default", "dev", ["task2_b"])
    both = require_split(tmp_path, "default", "train", max_instances_per_task=7, seed=3)
    alone = require_split(tmp_path, "default", "dev", max_instances_per_task=7, seed=3)
    assert len(both) == 14
    # the same task gets the same subset whatever else is in the split (dev draws with its own stream)
    assert [i.id for i in both.instances[1]] == [
        i.id for i in select_instances(parse_task(tmp_path / "tasks" / "task2_b.json"), "train", 7, seed=3)
    ]
    assert len(alone) == 7


def load_split_whole(root: Path, track: str, split: str, cap: int | None, seed: int) -> list[list[Instance]] | None:
    """The loader before streaming: parse every instance of every file, then select."""
    names = read_split(root, track, split)
    if names is None:
        return None
    return [select_instances(parse_task(root / "tasks" / f"{n}.json"), split, cap, seed) for n in names]


@pytest.mark.parametrize("track", ["default", "xlingual"])
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_streaming_loader_keeps_the_same_instances(ni_sample: Path, track: str, split: str) -> None:
    for cap, seed in [(None, 42), (100, 42), (7, 1), (250, 3), (0, 42)]:
        whole = load_split_whole(ni_sample, track, split, cap, seed)
        data = load_split(ni_sample, track, split, max_instances_per_task=cap, seed=seed)
        if whole is None:
            assert data is None
            continue
        assert data is not None and data.instances == whole
        assert [t.instances for t in data.tasks] == whole
        assert data.selection() == {"track": track, "split": split, "max_instances_per_task": cap, "seed": seed,
                                    "task_limit": None}


def test_streaming_loader_derives_the_same_ids(tmp_path: Path) -> None:
    body = quirky_task(150)
    body["Instances"] += [dict(body["Instances"][i]) for i in (3, 3, 120)]  # duplicates: suffixed ids
    body["Instances"][5]["id"] = "given-5"
    write_task(tmp_path, "task9_q", body)
    for split in ("train", "test"):
        write_split(tmp_path, "default", split, ["task9_q"])
        for cap in (None, 2, 40, 152):
            got = require_split(tmp_path, "default", split, max_instances_per_task=cap, seed=5).instances
            assert got == load_split_whole(tmp_path, "default", split, cap, 5)


def test_streaming_loader_checks_only_what_it_keeps(tmp_path: Path) -> None:
    body = quirky_task(150)
    body["Instances"][120] = {"input": "no output"}
    write_task(tmp_path, "task9_q", body)
    write_split(tmp_path, "default", "test", ["task9_q"])
    write_split(tmp_path, "default", "train", ["task9_q"])
    assert len(require_split(tmp_path, "default", "test")) == 100  # instance 120 is past the test pool
    with pytest.raises(DataError, match=r"task9_q.json: field 'Instances\[120\].output': missing"):
        require_split(tmp_path, "default", "train")


def test_a_split_keeps_one_copy_of_repeated_references(ni_sample: Path) -> None:
    data = require_split(ni_sample, "default", "train", max_instances_per_task=100, seed=42)
    objects: dict[tuple[str, ...], set[int]] = {}
    for _, inst in data:
        objects.setdefault(inst.outputs, set()).add(id(inst.outputs))
    assert all(len(ids) == 1 for ids in objects.values())  # equal references are one object across the split
    assert len(objects) < len(data) / 2  # ni-sample's classification tasks repeat their labels
    assert data.instances == load_split_whole(ni_sample, "default", "train", 100, 42)  # values unchanged
