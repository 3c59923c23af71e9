"""The run directory's read side (`ni.run_layout`): what the trainer's writer (`trainer.rundir.RunDir`) leaves is
what every reader sees, and what a killed or older trainer leaves never makes a reader fail."""

from __future__ import annotations

import errno
from pathlib import Path

import orjson
import pytest

from ni.run_layout import RunLayout, RunStatus, trainer_state
from trainer.rundir import RunDir


def _checkpoint(run: RunDir, step: int, total: int = 10) -> Path:
    target = run.checkpoint_dir(step)
    target.mkdir(parents=True)
    run.complete_checkpoint(target, {"step": step, "total_steps": total})
    return target


def test_status_as_the_writer_left_it(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert RunLayout(run.path).read_status() == RunStatus()  # nothing written yet
    run.set_status("running", attempt=1, world_size=2)
    run.set_status("running", total_steps=40)
    st = RunLayout(run.path).read_status()
    assert (st.state, st.total_steps, st.world_size, st.ended, st.problem) == ("running", 40, 2, False, None)
    run.set_status("preempted", step=12, wall_seconds=3.0)
    st = RunLayout(run.path).read_status()
    assert (st.state, st.step, st.total_steps, st.ended) == ("preempted", 12, 40, True)
    run.set_status("failed", error="RuntimeError: boom\nmore")
    assert RunLayout(run.path).read_status().error.startswith("RuntimeError: boom")
    run.set_status("completed")
    run.mark_done()
    assert RunLayout(run.path).read_status().state == "completed" and RunLayout(run.path).finished()


def test_a_status_without_total_steps_reads_without_one(tmp_path: Path) -> None:
    """status.json of an older trainer (or one not training yet): no total, no crash."""
    (tmp_path / "status.json").write_bytes(orjson.dumps({"state": "running", "started_at": "x"}))
    st = RunLayout(tmp_path).read_status()
    assert st.state == "running" and st.total_steps is None and st.step is None and st.problem is None
    (tmp_path / "status.json").write_bytes(orjson.dumps({"state": "running", "total_steps": True}))
    assert RunLayout(tmp_path).read_status().total_steps is None  # of another type: as absent


def test_unreadable_status_says_why_and_done_still_counts(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_bytes(b'{"state": "runn')  # cut mid-way (written by something else)
    st = RunLayout(tmp_path).read_status()
    assert st.record == {} and st.state is None and st.problem and st.problem.startswith("status.json unreadable: ")
    (tmp_path / "status.json").write_bytes(b"[1, 2]")
    assert RunLayout(tmp_path).read_status().problem == "status.json unreadable: not a JSON object"
    (tmp_path / "status.json").write_bytes(orjson.dumps({"state": "bogus"}))
    assert RunLayout(tmp_path).read_status().state is None and not RunLayout(tmp_path).finished()
    (tmp_path / "DONE").write_text("t\n")
    assert RunLayout(tmp_path).read_status().state == "completed"  # DONE decides, whatever status.json says


def test_the_writer_never_overwrites_a_status_it_could_not_read(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error (EIO on a failing disk, say) is not an empty status: the writer stops instead of replacing the
    record of earlier attempts; readers still say why and go on."""
    run = RunDir(tmp_path)
    run.set_status("running", attempt=1)
    run.set_status("preempted", step=3, wall_seconds=5.0)
    before = (tmp_path / "status.json").read_bytes()
    real = Path.read_bytes

    def failing(self: Path) -> bytes:
        if self.name == "status.json":
            raise OSError(errno.EIO, "Input/output error")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", failing)
    st = RunLayout(tmp_path).read_status()
    assert st.record == {} and st.problem == "status.json unreadable: [Errno 5] Input/output error"
    with pytest.raises(OSError):
        run.set_status("running", attempt=2)
    monkeypatch.undo()
    assert (tmp_path / "status.json").read_bytes() == before


def test_train_log_skips_a_torn_line_and_finds_steps_and_resumes(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert layout.train_log() == [] and layout.last_step() == 0 and layout.resumed_events() == []
    rows = [{"step": s, "loss": 1.0} for s in range(1, 30)] + [{"event": "resumed", "step": 29, "checkpoint": "c"}]
    (tmp_path / "train_log.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b'{"step": 30, "l')
    assert len(layout.train_log()) == 30 and layout.train_log(last=2) == rows[-1:]
    assert layout.last_step() == 29
    assert layout.resumed_events() == [{"event": "resumed", "step": 29, "checkpoint": "c"}]


def test_a_half_written_checkpoint_does_not_count(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    layout = RunLayout(run.path)
    assert layout.latest_checkpoint() is None
    done = _checkpoint(run, 4)
    half = run.checkpoint_dir(8)
    half.mkdir()
    (half / "trainer_state.json").write_bytes(orjson.dumps({"step": 8}))  # killed before COMPLETE
    assert layout.complete_checkpoints() == [done] and layout.latest_checkpoint() == done
    assert trainer_state(done) == {"step": 4, "total_steps": 10}
    _checkpoint(run, 12)
    assert layout.latest_checkpoint() == run.checkpoint_dir(12)


def test_checkpoints_outside_the_run_directory(tmp_path: Path) -> None:
    """`checkpoint.dir`: found where the config put them, never under RUN/checkpoints."""
    ckpt = tmp_path / "weka" / "ckpt"
    run = RunDir(tmp_path / "run", ckpt)
    run.path.mkdir()
    target = _checkpoint(run, 6)
    assert target.parent == ckpt
    assert RunLayout(run.path, ckpt).latest_checkpoint() == target
    assert RunLayout(run.path).latest_checkpoint() is None  # the plain layout does not see them
