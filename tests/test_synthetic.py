"""The embedded synthetic dataset (ni/synthetic.py): NI schema, splits, determinism, answers that match the
definitions (recomputed here independently), the real-data quirks, and the cache helpers."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest

from ni import synthetic
from ni.data import EVAL_INSTANCES_PER_TASK, load_split, parse_task, read_split
from ni.errors import DataError

NAMES = {f.slug: f.name for f in synthetic.FAMILIES}
HEADLINE_CATEGORIES = {
    "Textual Entailment", "Cause Effect Classification", "Coreference Resolution", "Dialogue Act Recognition",
    "Answerability Classification", "Word Analogy", "Overlap Extraction", "Keyword Tagging",
    "Question Rewriting", "Title Generation", "Data to Text", "Grammar Error Correction",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("synth") / "data")


def raw(root: Path, slug: str) -> dict:
    return json.loads((root / "tasks" / f"{NAMES[slug]}.json").read_text(encoding="utf-8"))


def pairs(root: Path, slug: str) -> list[tuple[str, list[str]]]:
    """(input, references as text) of every instance, through the project's own parser."""
    return [(i.input, list(i.outputs)) for i in parse_task(root / "tasks" / f"{NAMES[slug]}.json").instances]


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ layout and schema


def test_same_seed_gives_byte_identical_files(root: Path, tmp_path: Path) -> None:
    again = tree(synthetic.generate(tmp_path / "again"))
    assert again == tree(root)
    assert len(again) == len(synthetic.FAMILIES) + 3 + 1  # tasks, three split files, the manifest
    assert tree(synthetic.generate(tmp_path / "other", seed=1)) != again


def test_every_task_file_parses_and_follows_the_schema(root: Path) -> None:
    files = sorted((root / "tasks").glob("*.json"))
    assert len(files) == len(synthetic.FAMILIES) >= 12
    for path in files:
        assert re.fullmatch(r"task9\d{3}_[a-z0-9_]+", path.stem)
        text = path.read_text(encoding="utf-8")
        assert text.startswith('{\n  "Contributors"') and text.endswith("}\n")
        body = json.loads(text)
        for key in ("Source", "Contributors", "Domains", "Categories"):
            assert isinstance(body[key], list) and body[key], (path.name, key)
        assert body["Input_language"] == body["Output_language"] == ["English"]
        task = parse_task(path)
        assert task.definition and len(task.categories) == 1
        assert 3 <= len(task.positive_examples) <= 4 and len(task.negative_examples) == 2
        ids = [i.id for i in task.instances]
        assert len(set(ids)) == len(ids) == len(task.instances) >= 200
        for inst in task.instances:
            assert inst.input and inst.outputs and all(inst.outputs)
            assert len(inst.input.split()) <= 13
            assert all(len(o.split()) <= 8 for o in inst.outputs)
        answers = {i.input: i.outputs for i in task.instances}
        for ex in task.positive_examples + task.negative_examples:
            assert ex.input and ex.output
            if ex.input in answers:  # a demonstration agrees with the instances (positive) or not (negative)
                assert (ex.output in answers[ex.input]) == (ex in task.positive_examples), (path.name, ex)


def test_a_test_task_has_several_acceptable_answers(root: Path) -> None:
    multi = [slug for slug in NAMES if any(len(outs) > 1 for _, outs in pairs(root, slug))]
    assert multi == ["word_list_title_generation"]
    assert all(len(outs) == 2 for _, outs in pairs(root, "word_list_title_generation"))


def test_splits_load(root: Path) -> None:
    train = load_split(root, "default", "train")
    dev = load_split(root, "default", "dev")
    test = load_split(root, "default", "test")
    assert train is not None and dev is not None and test is not None
    assert (len(train.tasks), len(dev.tasks), len(test.tasks)) == (16, 2, 4)
    names = [t.name for s in (train, dev, test) for t in s.tasks]
    assert sorted(names) == sorted(NAMES.values())  # every task in exactly one split
    assert len(test) == 4 * EVAL_INSTANCES_PER_TASK  # the first-100 rule applies
    assert len(train) == 16 * 200
    assert len(load_split(root, "default", "train", max_instances_per_task=8) or []) == 128
    assert {t.category for t in test.tasks} <= HEADLINE_CATEGORIES  # category metrics show up
    assert read_split(root, "xlingual", "test") is None


def test_test_tasks_have_at_least_100_instances_even_when_asked_for_fewer(tmp_path: Path) -> None:
    small = synthetic.generate(tmp_path / "small", num_instances=20)
    for split, want in (("train", 20), ("dev", 20), ("test", 100)):
        data = load_split(small, "default", split)
        assert data is not None
        assert {len(t.instances) for t in data.tasks} == {want}
    with pytest.raises(DataError):
        synthetic.generate(tmp_path / "none", num_instances=0)


def test_first_100_of_every_test_task_are_balanced_over_the_groups(root: Path) -> None:
    for slug in ("word_list_title_generation", "place_of_things", "group_title_by_example", "place_by_example_test"):
        groups = Counter(group_of(x) for x, _ in pairs(root, slug)[:100])
        assert set(groups.values()) == {25}, slug
        first_20 = Counter(group_of(x) for x, _ in pairs(root, slug)[:20])  # what the debug sweep scores
        assert set(first_20.values()) == {5}, slug


# ------------------------------------------------------------------------------------------ the instruction matters

WORD_GROUP = {w: g for g, ws in synthetic.GROUPS.items() for w in ws}


def group_of(text: str) -> str:
    (group,) = {WORD_GROUP[w] for w in text.split(", ")}  # every input is words of one group
    return group


def definition(root: Path, slug: str) -> str:
    return parse_task(root / "tasks" / f"{NAMES[slug]}.json").definition


def test_test_tasks_are_unseen_phrasings_of_trained_answers(root: Path) -> None:
    split = {f.slug: f.split for f in synthetic.FAMILIES}
    seen = {definition(root, s) for s in NAMES if split[s] == "train"}
    assert all(definition(root, s) not in seen for s in NAMES if split[s] != "train")
    assert "group" in definition(root, "word_list_title_generation")
    assert "place" in definition(root, "place_of_things")


def test_underspecified_tasks_differ_only_in_their_examples_outputs(root: Path) -> None:
    """Each vague definition is shared by a group-name task and a place task with the same example inputs: a
    definition-only prompt cannot tell them apart, a prompt with demonstrations can."""
    pairs_ = [(f"group_by_example_{k}", f"place_by_example_{k}") for k in range(1, 5)]
    pairs_.append(("group_title_by_example", "place_by_example_test"))
    for group_slug, place_slug in pairs_:
        g = parse_task(root / "tasks" / f"{NAMES[group_slug]}.json")
        p = parse_task(root / "tasks" / f"{NAMES[place_slug]}.json")
        assert g.definition == p.definition
        assert [e.input for e in g.positive_examples][:3] == [e.input for e in p.positive_examples][:3]
        assert {e.output for e in g.positive_examples} <= set(synthetic.GROUP_NAMES)
        assert {e.output for e in p.positive_examples} <= set(synthetic.PLACES.values())


# ------------------------------------------------------------------------------------------ answers are right


def test_answers_match_the_definitions(root: Path) -> None:
    places = {"animals": "farm", "colours": "rainbow", "fruits": "orchard", "tools": "shed"}
    for slug in NAMES:
        task = parse_task(root / "tasks" / f"{NAMES[slug]}.json")
        for x, outs in pairs(root, slug):
            group = group_of(x)
            if slug == "count_words":
                assert outs == [str(len(x.split(", ")))]
            elif slug == "word_list_title_generation":
                assert outs == [group, group[:-1]]
            elif "place" in slug or "where" in slug:
                assert outs == [places[group]], (slug, x)
            else:
                assert outs == [group], (slug, x)
        for e in task.positive_examples:
            assert e.output == pairs_answer(slug, e.input, places)
        for e in task.negative_examples:
            assert e.output != pairs_answer(slug, e.input, places)


def pairs_answer(slug: str, x: str, places: dict[str, str]) -> str:
    if slug == "count_words":
        return str(len(x.split(", ")))
    return places[group_of(x)] if "place" in slug or "where" in slug else group_of(x)


# ------------------------------------------------------------------------------------------ real-data quirks


def test_real_data_quirks_are_present_and_parse(root: Path) -> None:
    assert isinstance(raw(root, "which_group")["Definition"], str)
    assert isinstance(raw(root, "word_group_classification")["Definition"], list)
    assert definition(root, "which_group").startswith("Which group")

    plain = raw(root, "which_place")
    assert all("explanation" not in e for e in plain["Positive Examples"] + plain["Negative Examples"])
    assert all(e.explanation is None for e in parse_task(root / "tasks" / f"{NAMES['which_place']}.json").positive_examples)

    counts = raw(root, "count_words")["Instances"]
    assert all(isinstance(o, int) for i in counts for o in i["output"])
    assert pairs(root, "count_words")[0][1][0].isdigit()

    some = raw(root, "place_by_example_2")["Instances"]
    missing = [i for i in some if "id" not in i]
    assert 0 < len(missing) < len(some)
    ids = [i.id for i in parse_task(root / "tasks" / f"{NAMES['place_by_example_2']}.json").instances]
    assert len(set(ids)) == len(ids) and all(i.startswith("task9010-") for i in ids)


# ------------------------------------------------------------------------------------------ writing and caching


def test_refuses_to_overwrite_unless_asked(root: Path, tmp_path: Path) -> None:
    out = synthetic.generate(tmp_path / "data", seed=3, num_instances=10)
    before = tree(out)
    with pytest.raises(DataError) as err:
        synthetic.generate(out, num_instances=10)
    assert "\n" not in str(err.value) and str(out) in str(err.value) and "overwrite" in str(err.value)
    assert tree(out) == before
    assert synthetic.generate(out, overwrite=True) == out
    assert tree(out) == tree(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp directories left behind

    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        synthetic.generate(stray)
    assert (stray / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (synthetic.generate(empty, num_instances=5) / "splits" / "default" / "test_tasks.txt").is_file()


def test_default_root_is_generated_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "synthetic"
    monkeypatch.setenv(synthetic.CACHE_ENV, str(cache))
    assert synthetic.default_data_root() == cache
    assert synthetic.ensure_default_data() == cache
    first = tree(cache)
    marker = cache / "tasks" / f"{NAMES['word_group_classification']}.json"
    mtime = marker.stat().st_mtime_ns
    assert synthetic.ensure_default_data() == cache
    assert marker.stat().st_mtime_ns == mtime and tree(cache) == first
    assert require_test_split(cache) == 4

    monkeypatch.delenv(synthetic.CACHE_ENV)
    assert synthetic.default_data_root() == Path("~/.cache/tk-lab/synthetic-v2").expanduser()


def require_test_split(root: Path) -> int:
    data = load_split(root, "default", "test")
    assert data is not None
    return len(data.tasks)


def test_default_root_tolerates_a_race(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "race"
    monkeypatch.setenv(synthetic.CACHE_ENV, str(cache))
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(synthetic.ensure_default_data())
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [cache] * 4
    assert require_test_split(cache) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["race"]


def test_losing_the_rename_race_keeps_the_winners_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(synthetic.CACHE_ENV, str(cache))
    real_write = synthetic._write_root
    lost: list[bool] = []

    def write_then_lose(tmp: Path, seed: int, n: int) -> None:
        real_write(tmp, seed, n)
        if not lost:  # another process finishes first, while we are still writing
            lost.append(True)
            synthetic.generate(cache)

    monkeypatch.setattr(synthetic, "_write_root", write_then_lose)
    assert synthetic.ensure_default_data() == cache
    assert require_test_split(cache) == 4


def test_default_root_refuses_a_foreign_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.setenv(synthetic.CACHE_ENV, str(tmp_path))
    with pytest.raises(DataError, match="not a synthetic data root"):
        synthetic.ensure_default_data()


def test_default_root_replaces_an_older_generation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = synthetic.generate(tmp_path / "cache", num_instances=5)
    monkeypatch.setenv(synthetic.CACHE_ENV, str(cache))
    assert synthetic.ensure_default_data() == cache
    assert len(parse_task(cache / "tasks" / f"{NAMES['word_group_classification']}.json").instances) == 200


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert synthetic.main([str(out), "--num-instances", "7"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert synthetic.main([str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
