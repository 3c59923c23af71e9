"""The encoded-split cache: full identity in the key, hits that read no task file, one builder, whole entries."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

import ni.fingerprint
import trainer.dataset as dataset
from ni.data import SplitData, SplitRef, require_split
from tests.conftest import REPO
from trainer.dataset import encode_split, source_lengths

ENC = "instruct_pos_2_input"


@pytest.fixture()
def tok(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir())


def test_entry_equals_fresh_encoding_and_maps_int32(embedded: Path, tok: Any, cache: Path) -> None:
    data = require_split(embedded, "default", "train", max_instances_per_task=6, seed=3)
    fresh = encode_split(data, ENC, tok, 96, 16, 3)
    cached = encode_split(data.ref(), ENC, tok, 96, 16, 3, cache_key={})
    assert cached == fresh and len(cached) == len(data) == 6 * len(data.tasks)
    assert list(cached.ids) == [i.id for _, i in data] and list(cached.tasks) == [t.name for t, _ in data]
    assert source_lengths(cached) == [len(x) for x in fresh.input_ids]
    table = cached.input_ids.flat  # type: ignore[attr-defined]
    assert table.dtype.name == "int32" and table.filename is not None  # a memory map of the entry's file


def test_eval_cap_is_part_of_the_key(embedded: Path, tok: Any, cache: Path) -> None:
    """Two runs differing only in max_instances_per_eval_task used to share an entry (and crash)."""
    small = encode_split(SplitRef(embedded, "default", "test", 3), ENC, tok, 96, 16, 42, cache_key={})
    big = encode_split(SplitRef(embedded, "default", "test", 5), ENC, tok, 96, 16, 42, cache_key={})
    assert len(entries(cache)) == 2 and len(big) > len(small)
    assert small == encode_split(require_split(embedded, "default", "test", max_instances_per_task=3), ENC, tok,
                                 96, 16, 42)


def test_a_hit_reads_no_task_file(embedded: Path, tok: Any, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = SplitRef(embedded, "default", "train", 4, 1)
    first = encode_split(ref, ENC, tok, 96, 16, 1, cache_key={})

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a cache hit read a task file")

    monkeypatch.setattr(ni.fingerprint, "file_sha256", refuse)
    monkeypatch.setattr(SplitRef, "load", refuse)
    monkeypatch.setattr(dataset, "_encode", refuse)
    assert encode_split(ref, ENC, tok, 96, 16, 1, cache_key={}) == first
    task = embedded / "tasks" / f"{ref.task_names()[0]}.json"
    os.utime(task)  # touched: hashed again (and refused here), never trusted by name
    with pytest.raises(AssertionError, match="read a task file"):
        encode_split(ref, ENC, tok, 96, 16, 1, cache_key={})


def test_a_mismatched_or_damaged_entry_is_discarded_in_one_line(embedded: Path, tok: Any, cache: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    ref = SplitRef(embedded, "default", "test", 2)
    first = encode_split(ref, ENC, tok, 96, 16, 42, cache_key={})
    (entry,) = entries(cache)
    meta = orjson.loads((entry / "meta.json").read_bytes())
    meta["key"]["max_instances_per_task"] = 7
    (entry / "meta.json").write_bytes(orjson.dumps(meta))
    assert encode_split(ref, ENC, tok, 96, 16, 42, cache_key={}) == first
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "discarding" in err[0] and "max_instances_per_task" in err[0] and str(entry) in err[0]
    (entry / "meta.json").write_bytes(b"{not json")
    assert encode_split(ref, ENC, tok, 96, 16, 42, cache_key={}) == first
    assert "unreadable" in capsys.readouterr().err


def test_a_killed_build_leaves_no_entry(embedded: Path, tok: Any, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = SplitRef(embedded, "default", "test", 2)

    def die(self: Any, directory: Path) -> None:
        (directory / "input_tokens.npy").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset.EncodedTable, "write", die)
    with pytest.raises(KeyboardInterrupt):
        encode_split(ref, ENC, tok, 96, 16, 42, cache_key={})
    assert entries(cache) == []  # the temp dir went with the failure; a kill -9 leaves only a dot-named temp dir
    monkeypatch.undo()
    monkeypatch.setenv("TK_CACHE_DIR", str(cache))
    assert len(encode_split(ref, ENC, tok, 96, 16, 42, cache_key={})) == 2 * len(ref.task_names())


def _rank(args: tuple[str, str, str, str]) -> list[int]:
    root, model, cache, log = args
    os.environ["TK_CACHE_DIR"] = cache
    from transformers import AutoTokenizer

    real = dataset._encode

    def counted(data: SplitData, *a: Any) -> Any:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(data, *a)

    dataset._encode = counted  # type: ignore[assignment]
    enc = encode_split(SplitRef(Path(root), "default", "train", 5, 2), ENC, AutoTokenizer.from_pretrained(model),
                       96, 16, 2, cache_key={})
    return [len(enc), *enc.input_ids[0]]


@pytest.mark.slow
def test_concurrent_processes_build_an_entry_once(embedded: Path, tiny_model: Path, cache: Path,
                                                  tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        got = pool.map(_rank, [(str(embedded), str(tiny_model), str(cache), str(log))] * 3)
    assert got[0] == got[1] == got[2]
    assert len(log.read_text().split()) == 1 and len(entries(cache)) == 1


@pytest.mark.slow
def test_prepare_builds_what_the_runs_read_so_no_job_encodes(tmp_path: Path, embedded: Path, cache: Path) -> None:
    import subprocess
    import sys

    text = (f"name: prep\nbase:\n  model: {{name_or_path: tiny}}\n  data: {{root: {embedded}, max_instances_per_task: 4,"
            " max_instances_per_eval_task: 2, max_source_length: 96, train_encoding: tk_instruct}\n"
            "  optim: {epochs: 2, per_device_batch_size: 8}\n  eval: {max_new_tokens: 4}\n"
            "  logging: {progress: false}\ngrid:\n  seed: [1]\n  optim.lr: [1.0e-3, 2.0e-3]\n")
    sweep = tmp_path / "prep.yaml"
    sweep.write_text(text)

    def launcher(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "launcher", *args, str(sweep), "--runs-root", str(tmp_path / "runs")],
                           cwd=REPO, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    out = launcher("prepare")
    # two runs share: train epoch 0, train epoch 1 (the mixture re-draws per epoch), test
    assert out.count(" encoded ") == 3 and out.count(" cached ") == 0, out
    built = {p: p.stat().st_ino for p in entries(cache)}
    assert len(built) == 3
    out = launcher("submit")
    assert out.count(" cached ") == 3 and " encoded " not in out, out
    assert {p: p.stat().st_ino for p in entries(cache)} == built  # the jobs only mapped them


def test_table_round_trip(tmp_path: Path) -> None:
    from trainer.encoded import EncodedTable, TableBuilder

    b = TableBuilder()
    b.add_task("t1", ["a", "bé"], [[1, 2], [3]], [[[5], [6, 7]], [[8]]])
    b.add_task("t_empty", [], [], [])
    b.add_task("t3", ["c"], [[]], [[[2**31 - 1]]])
    b.finish().write(tmp_path)
    t = EncodedTable.open(tmp_path, ["t1", "t_empty", "t3"])
    assert list(t.ids) == ["a", "bé", "c"] and [t.ids[i] for i in range(3)] == ["a", "bé", "c"]
    assert list(t.tasks) == ["t1", "t1", "t3"]
    assert list(t.input_ids) == [[1, 2], [3], []] and t.input_ids.lengths() == [2, 1, 0]
    assert list(t.labels) == [[[5], [6, 7]], [[8]], [[2**31 - 1]]] and t.labels[:1] == [[[5], [6, 7]]]
    with pytest.raises(OverflowError):
        TableBuilder().add_task("t", ["x"], [[2**31]], [[[1]]])
