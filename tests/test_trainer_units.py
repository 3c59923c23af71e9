"""Trainer building blocks: length-grouped batches, collation, the encoding cache, dev evaluation, trackers and
checkpoints kept outside the run directory."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from ni.data import require_split
from ni.errors import ConfigError
from tests.conftest import REPO, read_log, small_run, write_config
from trainer.config import RunConfig, apply_overrides, validate_config
from trainer.dataset import collate, encode_split, epoch_batches, pick_labels
from trainer.rundir import OWNER_FILE, RunDir


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def test_length_grouped_batches_cover_every_example_with_less_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(1003)]
    grouped = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True, multiple_of=4)
    plain = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=False, multiple_of=4)
    for batches in (grouped, plain):
        assert len(batches) % 4 == 0
        seen = Counter(i for b in batches for i in b)
        assert set(seen) == set(range(1003))  # every example, each epoch
        assert sum(seen.values()) - 1003 < 8 * 4  # only the cyclic padding to a multiple of world x accum repeats
    assert padding_fraction(grouped, lengths) < padding_fraction(plain, lengths) / 3
    assert grouped == epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True, multiple_of=4)
    assert grouped != epoch_batches(lengths, 8, seed=1, epoch=1, group_by_length=True, multiple_of=4)


def test_collate_pads_dynamically_and_masks_labels() -> None:
    batch = collate([[5, 6, 1], [7, 1]], [[9, 1], [8, 8, 8, 1]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [7, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[9, 1, -100, -100], [8, 8, 8, 1]]


def test_encoding_cache_is_keyed_by_task_content(tmp_path: Path, embedded: Path, tiny_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    monkeypatch.setenv("TK_CACHE_DIR", str(tmp_path / "cache"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    data = require_split(embedded, "default", "test", max_instances_per_task=5)
    first = encode_split(data, "instruct_pos_2_input", tok, 128, 16, 1, cache_key={"k": 1})

    def entries() -> list[Path]:
        return sorted(p for p in (tmp_path / "cache").iterdir() if p.is_dir())

    files = entries()
    assert len(files) == 1
    again = encode_split(data, "instruct_pos_2_input", tok, 128, 16, 1, cache_key={"k": 1})
    assert again == first and entries() == files
    assert first == encode_split(data, "instruct_pos_2_input", tok, 128, 16, 1)  # the same as without the cache
    encode_split(data, "instruct_input", tok, 128, 16, 1, cache_key={"k": 1})  # another encoding: another entry
    assert len(entries()) == 2
    copy = tmp_path / "copy"
    shutil.copytree(embedded, copy)
    task = copy / "tasks" / f"{data.tasks[0].name}.json"
    task.write_bytes(task.read_bytes().replace(b'"Definition"', b'"Definition" ', 1))  # same data, other bytes
    encode_split(require_split(copy, "default", "test", max_instances_per_task=5), "instruct_pos_2_input", tok,
                 128, 16, 1, cache_key={"k": 1})
    assert len(entries()) == 3


def test_labels_are_drawn_per_epoch_from_all_references(embedded: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    data = require_split(embedded, "default", "test", max_instances_per_task=100)
    enc = encode_split(data, "input_only", tok, 64, 16, 0)
    multi = [i for i, refs in enumerate(enc.labels) if len(refs) > 1]
    assert multi
    e0, e1 = pick_labels(enc, 0, 0), pick_labels(enc, 0, 1)
    assert all(e0[i] in enc.labels[i] for i in multi)
    assert any(e0[i] != e1[i] for i in multi) and e0 == pick_labels(enc, 0, 0)


@pytest.mark.slow
def test_dev_evaluation_is_logged_and_tensorboard_works_offline(tmp_path: Path, tiny_model: Path,
                                                                embedded: Path) -> None:
    pytest.importorskip("tensorboard")
    cfg = small_run(tmp_path, tiny_model, embedded, **{"eval.every_steps": 3, "logging.tensorboard": "true"})
    r = subprocess.run([sys.executable, "-m", "trainer", "run", "--config", str(write_config(tmp_path / "r.yaml", **cfg))],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    evals = [x for x in read_log(tmp_path / "run") if x.get("event") == "eval"]
    assert [x["step"] for x in evals] == [3] and {"eval_rougeL", "eval_exact_match"} <= set(evals[0])
    assert list((tmp_path / "run" / "tracking").rglob("events.out.tfevents.*"))
    # without a dev split: said once, skipped
    data = tmp_path / "nodev"
    shutil.copytree(embedded, data)
    (data / "splits" / "default" / "dev_tasks.txt").unlink()
    cfg = small_run(tmp_path / "b", tiny_model, data, **{"eval.every_steps": 2})
    r = subprocess.run([sys.executable, "-m", "trainer", "run", "--config", str(write_config(tmp_path / "b.yaml", **cfg))],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("skipping evaluation during training") == 1
    assert not [x for x in read_log(tmp_path / "b" / "run") if x.get("event") == "eval"]
    assert yaml.safe_load((tmp_path / "b" / "run" / "config.yaml").read_text())["eval"]["every_steps"] == 2
    assert orjson.loads((tmp_path / "b" / "run" / "status.json").read_bytes())["state"] == "completed"


# --- checkpoints outside the run directory (checkpoint.dir) ---------------------------------------------------------


def _cfg(**extra: object) -> RunConfig:
    raw = {"model": {"name_or_path": "m"}, "optim": {"max_steps": 10}}
    return validate_config(apply_overrides(raw, [f"{k}={v}" for k, v in extra.items()]), "x")


def _checkpoint(run: RunDir, step: int) -> Path:
    """What the trainer's save_checkpoint leaves (the accelerate state aside)."""
    target = run.checkpoint_dir(step)
    target.mkdir(parents=True)
    run.complete_checkpoint(target, {"step": step, "total_steps": 10})
    return target


def test_checkpoint_dir_is_not_part_of_the_run_identity(tmp_path: Path) -> None:
    plain, moved = _cfg(), _cfg(**{"checkpoint.dir": str(tmp_path / "ckpt")})
    assert moved.identity() == plain.identity() and moved.digest() == plain.digest()
    assert _cfg(**{"optim.lr": 0.5}).digest() != plain.digest()
    assert RunDir.of(plain, tmp_path / "run").checkpoints == tmp_path / "run" / "checkpoints"
    assert RunDir.of(moved, tmp_path / "run").checkpoints == tmp_path / "ckpt"


def test_fresh_run_dir_resumes_from_its_checkpoint_dir_with_the_log(tmp_path: Path) -> None:
    ckpt = tmp_path / "weka" / "sweep" / "r1" / "checkpoints"
    cfg = _cfg(**{"checkpoint.dir": str(ckpt), "checkpoint.keep_last": 2})
    first = RunDir.of(cfg, tmp_path / "job1")
    assert first.claim(cfg, force=False) == "start"
    assert (ckpt / OWNER_FILE).read_text().strip() == cfg.digest()
    for step in (1, 2, 3):
        first.log({"step": step, "loss": 3.0 - step})
        _checkpoint(first, step)
    first.prune_checkpoints(cfg.checkpoint.keep_last)
    assert [p.name for p in first.complete_checkpoints()] == ["step-000000002", "step-000000003"]
    assert not (tmp_path / "job1" / "checkpoints").exists()  # nothing of it in the run directory
    first.log({"step": 4, "loss": -1.0})  # after the last checkpoint: the resumed job redoes it

    again = RunDir.of(cfg, tmp_path / "job2")  # what Beaker's resumed job gets: an empty /results, the same Weka path
    assert again.claim(cfg, force=False) == "resume"
    assert again.latest_checkpoint() == ckpt / "step-000000003"
    assert [x["step"] for x in read_log(tmp_path / "job2")] == [1, 2, 3]  # the log up to the checkpoint
    assert again.claim(cfg, force=False) == "resume"
    assert [x["step"] for x in read_log(tmp_path / "job2")] == [1, 2, 3]
    # The first job's own directory (a local restart after a hard kill): step 4 is trained again, logged once.
    assert first.claim(cfg, force=False) == "resume"
    assert [x["step"] for x in read_log(tmp_path / "job1")] == [1, 2, 3]


def _checkpointed(tmp_path: Path, name: str) -> tuple[Path, RunConfig, RunDir]:
    """A run claimed in tmp_path/name whose checkpoints go to tmp_path/ckpt, with a complete one at step 5."""
    ckpt = tmp_path / "ckpt"
    cfg = _cfg(**{"checkpoint.dir": str(ckpt)})
    run = RunDir.of(cfg, tmp_path / name)
    run.claim(cfg, force=False)
    _checkpoint(run, 5)
    return ckpt, cfg, run


def test_a_checkpoint_dir_of_another_config_is_refused(tmp_path: Path) -> None:
    ckpt, cfg, _ = _checkpointed(tmp_path, "a")
    other = _cfg(**{"checkpoint.dir": str(ckpt), "optim.lr": 0.5})
    with pytest.raises(ConfigError, match=r"ckpt: holds checkpoints of a different config \(config.sha256 differs\)"):
        RunDir.of(other, tmp_path / "b").claim(other, force=False)
    with pytest.raises(ConfigError, match="different config"):  # --force never takes another run's checkpoints
        RunDir.of(other, tmp_path / "b").claim(other, force=True)
    assert not (tmp_path / "b").exists() and (ckpt / "step-000000005" / "COMPLETE").is_file()
    (ckpt / OWNER_FILE).unlink()  # complete checkpoints of no known run
    with pytest.raises(ConfigError, match=r"holds checkpoints of an unknown run \(no config.sha256\)") as e:
        RunDir.of(cfg, tmp_path / "c").claim(cfg, force=False)
    assert "\n" not in str(e.value)
    predict_only = _cfg(**{"checkpoint.dir": str(ckpt), "do_train": "false"})  # trains nothing: never looks there
    assert RunDir.of(predict_only, tmp_path / "d").claim(predict_only, force=False) == "start"


def test_force_clears_only_the_runs_own_checkpoints(tmp_path: Path) -> None:
    ckpt, cfg, run = _checkpointed(tmp_path, "run")
    (ckpt / "notes.txt").write_text("mine")
    assert run.claim(cfg, force=True) == "start"
    assert sorted(p.name for p in ckpt.iterdir()) == [OWNER_FILE, "notes.txt"]


def test_stop_flag_keeps_catching_stop_signals_once_one_came() -> None:
    """SLURM signals every process of a step and submitit's wrapper forwards its copy: a second USR2 arriving while
    the trainer tears down must not kill it by signal (exit -12 reads as a failure, not a preemption)."""
    import os
    import signal

    from trainer.train import StopFlag

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        quiet = StopFlag()
        quiet.install()
        quiet.restore()
        assert {s: signal.getsignal(s) for s in before} == before  # no signal: the previous handlers are back

        stopped = StopFlag()
        stopped.install()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stopped.signum == signal.SIGUSR2
        stopped.restore()
        os.kill(os.getpid(), signal.SIGUSR2)  # would end this process under the default handler
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.signum == signal.SIGTERM
    finally:
        for s, h in before.items():
            signal.signal(s, h)
