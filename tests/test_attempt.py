"""trainer/attempt.py: the claim of a run directory and one attempt's status.json, without a trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ni.errors import ConfigError
from trainer.attempt import Preempted, claim, run_status
from trainer.config import validate_config
from trainer.rundir import EXIT_PREEMPTED, PARTIAL_PREDICTIONS, RunDir


def fresh(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / PARTIAL_PREDICTIONS).mkdir()  # what a stopped attempt kept
    return run


def test_a_block_that_ends_is_completed_then_done(tmp_path: Path) -> None:
    run = fresh(tmp_path)
    with run_status(run, world_size=2, device="cpu") as status:
        assert run.status()["state"] == "running" and run.status()["world_size"] == 2 and not run.done()
        status.update(loaded_partitioned=False)
        assert run.status()["state"] == "running" and run.status()["loaded_partitioned"] is False
    st = run.status()
    assert status.exit_code == 0 and st["state"] == "completed" and st["attempt"] == 1 and "error" not in st
    assert st["wall_seconds"] >= 0 and st["finished_at"] and run.done()
    assert not (run.path / PARTIAL_PREDICTIONS).exists()


@pytest.mark.parametrize(("error", "line"), [
    (ConfigError("data/x.yaml: field 'lr' is wrong", hint="Use a number."), "data/x.yaml: field 'lr' is wrong Use a number."),
    (ValueError("boom"), "ValueError: boom"),
    (KeyboardInterrupt(), "KeyboardInterrupt"),
])
def test_an_exception_is_failed_with_its_line_and_raised_on(tmp_path: Path, error: BaseException, line: str) -> None:
    run = fresh(tmp_path)
    with pytest.raises(type(error)), run_status(run, device="cpu"):
        raise error
    st = run.status()
    assert st["state"] == "failed" and st["error"] == line and "wall_seconds" in st and st["finished_at"]
    assert not run.done() and (run.path / PARTIAL_PREDICTIONS).is_dir()


def test_preemption_is_preempted_with_its_exit_code_and_the_next_attempt_counts(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = fresh(tmp_path)
    with run_status(run) as status:
        raise Preempted("stopped at step 3 by signal 15; state saved", step=3, signal=15)
    st = run.status()
    assert status.exit_code == EXIT_PREEMPTED and st["state"] == "preempted" and (st["step"], st["signal"]) == (3, 15)
    assert f"{run.path}: stopped at step 3 by signal 15; state saved" in capsys.readouterr().out
    assert not run.done() and (run.path / PARTIAL_PREDICTIONS).is_dir()  # kept for the next attempt

    with run_status(run) as status:  # the next attempt: how the last one ended is gone, the attempts add up
        st = run.status()
        assert st["state"] == "running" and st["attempt"] == 2 and "step" not in st and "signal" not in st
    assert status.exit_code == 0 and run.status()["state"] == "completed" and run.done()


def test_only_the_writing_rank_writes_but_every_rank_gets_the_exit_code(tmp_path: Path) -> None:
    run = fresh(tmp_path)
    with run_status(run, writes=False) as status:
        status.update(loaded_partitioned=True)
        raise Preempted("stopped", step=1)
    assert status.exit_code == EXIT_PREEMPTED
    with pytest.raises(ValueError), run_status(run, writes=False):
        raise ValueError("boom")
    with run_status(run, writes=False):
        pass
    assert not (run.path / "status.json").exists() and not run.done()


def test_a_completed_run_is_claimed_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = validate_config({"model": {"name_or_path": "baseline:copy_demo"}, "do_train": False}, "r.yaml")
    run = RunDir(tmp_path / "run")
    assert claim(run, cfg, force=False)
    with run_status(run):
        pass
    assert not claim(run, cfg, force=False)
    assert "already completed (use --force to run again)" in capsys.readouterr().out
    assert claim(run, cfg, force=True) and not run.done()
