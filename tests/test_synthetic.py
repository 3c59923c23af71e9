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


def test_some_tasks_have_several_acceptable_answers(root: Path) -> None:
    multi = [
        slug for slug in NAMES if any(len(outs) > 1 for _, outs in pairs(root, slug))
    ]
    assert len(multi) >= 3
    assert all(len(outs) == 2 for _, outs in pairs(root, "word_list_title_generation"))


def test_splits_load(root: Path) -> None:
    train = load_split(root, "default", "train")
    dev = load_split(root, "default", "dev")
    test = load_split(root, "default", "test")
    assert train is not None and dev is not None and test is not None
    assert (len(train.tasks), len(dev.tasks), len(test.tasks)) == (10, 2, 4)
    names = [t.name for s in (train, dev, test) for t in s.tasks]
    assert sorted(names) == sorted(NAMES.values())  # every task in exactly one split
    assert len(test) == 4 * EVAL_INSTANCES_PER_TASK  # the first-100 rule applies
    assert len(train) == 10 * 200
    assert len(load_split(root, "default", "train", max_instances_per_task=8) or []) == 80
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


def test_first_100_of_classification_test_task_are_label_balanced(root: Path) -> None:
    labels = Counter(outs[0] for _, outs in pairs(root, "word_in_list_answerability")[:100])
    assert labels == {"yes": 50, "no": 50}
    entail = Counter(outs[0] for _, outs in pairs(root, "colour_entailment")[:100])
    assert set(entail) == {"entailment", "neutral", "contradiction"} and max(entail.values()) == 34
    groups = Counter(outs[0] for _, outs in pairs(root, "word_list_title_generation")[:100])
    assert set(groups.values()) == {25}


# ------------------------------------------------------------------------------------------ the instruction matters


def test_sibling_tasks_share_inputs_but_need_different_outputs(root: Path) -> None:
    shared = ["first_word", "last_word", "reverse_words", "count_words", "longest_word"]
    tasks = {s: pairs(root, s) for s in shared}
    inputs = [x for x, _ in tasks["first_word"]]
    for slug in shared:
        assert [x for x, _ in tasks[slug]] == inputs  # the very same inputs, in the same order
    definitions = {parse_task(root / "tasks" / f"{NAMES[s]}.json").definition for s in shared}
    assert len(definitions) == len(shared)
    for i in range(len(inputs)):
        answers = [tasks[s][i][1][0] for s in shared[:4]]
        assert len(set(answers)) == 4, answers  # same input, four different answers
    # Demonstrations share inputs too, so a prompt with examples shows the contrast.
    demos = [[e.input for e in parse_task(root / "tasks" / f"{NAMES[s]}.json").positive_examples][:3] for s in shared]
    assert all(d == demos[0] for d in demos)


@pytest.mark.parametrize(
    ("test_slug", "train_slug"),
    [
        ("word_in_list_answerability", "word_in_list"),
        ("word_list_title_generation", "word_group_classification"),
    ],
)
def test_test_siblings_are_worded_differently_but_solvable_the_same_way(
    root: Path, test_slug: str, train_slug: str
) -> None:
    held_out = parse_task(root / "tasks" / f"{NAMES[test_slug]}.json")
    seen = parse_task(root / "tasks" / f"{NAMES[train_slug]}.json")
    assert held_out.definition != seen.definition
    train_answer = {i.input: i.outputs[0] for i in seen.instances}
    common = [i for i in held_out.instances if i.input in train_answer]
    for inst in common:  # where an input occurs in both, the training answer is right for the test task too
        assert train_answer[inst.input] in inst.outputs


# ------------------------------------------------------------------------------------------ answers are right


def _words(text: str) -> list[str]:
    return text.split()


def _replaced(text: str, old: str, new: str) -> str:
    return re.sub(rf"\b{re.escape(old)}\b", new, text)


def test_word_list_answers_match_the_definitions(root: Path) -> None:
    for x, outs in pairs(root, "first_word"):
        assert outs == [_words(x)[0]]
    demos = parse_task(root / "tasks" / f"{NAMES['first_word']}.json")
    assert all(e.output == _words(e.input)[0] for e in demos.positive_examples)
    assert all(e.output != _words(e.input)[0] and e.explanation for e in demos.negative_examples)
    for x, outs in pairs(root, "last_word"):
        assert outs == [_words(x)[-1]]
    for x, outs in pairs(root, "reverse_words"):
        assert outs == [" ".join(_words(x)[::-1])]
    for x, outs in pairs(root, "count_words"):
        assert outs == [str(len(_words(x)))]
    for x, outs in pairs(root, "longest_word"):
        most = max(map(len, _words(x)))
        assert sorted(outs) == sorted(w for w in _words(x) if len(w) == most)


def test_membership_and_overlap_answers_match_the_definitions(root: Path) -> None:
    for slug in ("word_in_list", "word_in_list_answerability"):
        for x, outs in pairs(root, slug):
            m = re.fullmatch(r"Words: (.+)\. Query: (\w+)", x)
            assert m, x
            assert outs == ["yes" if m[2] in m[1].split(", ") else "no"]
    for x, outs in pairs(root, "common_word_extraction"):
        m = re.fullmatch(r"List A: (.+)\. List B: (.+)\.", x)
        assert m, x
        assert outs == sorted(set(m[1].split()) & set(m[2].split()))


def test_rewriting_answers_match_the_definitions(root: Path) -> None:
    for slug, prefix in (("replace_word", "Sentence: "), ("question_rewriting", "Question: ")):
        for x, outs in pairs(root, slug):
            m = re.fullmatch(rf"{prefix}(.+?) Replace (\w+) with (\w+)\.", x)
            assert m, x
            text = m[1]
            assert outs == [_replaced(text, m[2], m[3])], x
            assert outs[0] != text
            assert outs[0].endswith("?" if slug == "question_rewriting" else ".")


def test_entailment_and_analogy_answers_match_the_definitions(root: Path) -> None:
    for x, outs in pairs(root, "colour_entailment"):
        m = re.fullmatch(r"Premise: the (\w+) (\w+) \w+\. Hypothesis: the (\w+) is (\w+)\.", x)
        assert m, x
        colour, noun, h_noun, h_colour = m.groups()
        want = "neutral" if h_noun != noun else "entailment" if h_colour == colour else "contradiction"
        assert outs == [want], x
    opposites = {"hot": "cold", "up": "down", "wet": "dry", "loud": "quiet", "left": "right", "open": "closed"}
    opposites |= {b: a for a, b in opposites.items()}
    checked = 0
    for x, outs in pairs(root, "antonym_analogy"):
        m = re.fullmatch(r"(\w+) : (\w+) :: (\w+) : \?", x)
        assert m, x
        if m[3] in opposites:
            assert opposites[m[3]] in outs
            checked += 1
    assert checked > 10


# ------------------------------------------------------------------------------------------ real-data quirks


def test_real_data_quirks_are_present_and_parse(root: Path) -> None:
    assert isinstance(raw(root, "reverse_words")["Definition"], str)
    assert isinstance(raw(root, "first_word")["Definition"], list)
    assert parse_task(root / "tasks" / f"{NAMES['reverse_words']}.json").definition.startswith("You are given")

    replace = raw(root, "replace_word")
    assert all("explanation" not in e for e in replace["Positive Examples"] + replace["Negative Examples"])
    assert all(e.explanation is None for e in parse_task(root / "tasks" / f"{NAMES['replace_word']}.json").positive_examples)

    counts = raw(root, "count_words")["Instances"]
    assert all(isinstance(o, int) for i in counts for o in i["output"])
    assert pairs(root, "count_words")[0][1][0].isdigit()

    entail = raw(root, "colour_entailment")["Instances"]
    missing = [i for i in entail if "id" not in i]
    assert 0 < len(missing) < len(entail)
    ids = [i.id for i in parse_task(root / "tasks" / f"{NAMES['colour_entailment']}.json").instances]
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
    marker = cache / "tasks" / f"{NAMES['first_word']}.json"
    mtime = marker.stat().st_mtime_ns
    assert synthetic.ensure_default_data() == cache
    assert marker.stat().st_mtime_ns == mtime and tree(cache) == first
    assert require_test_split(cache) == 4

    monkeypatch.delenv(synthetic.CACHE_ENV)
    assert synthetic.default_data_root() == Path("~/.cache/tk-lab/synthetic-v1").expanduser()


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
    assert len(parse_task(cache / "tasks" / f"{NAMES['first_word']}.json").instances) == 200


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert synthetic.main([str(out), "--num-instances", "7"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert synthetic.main([str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
