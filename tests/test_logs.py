"""`python -m launcher logs`: a local run followed for real (and Ctrl-C, which never stops the job), SLURM attempts
split at each requeue (submitit's files; on a real cluster when SLURM_CONF is set), Beaker through the fake
client, and the sweep summary (steps, loss, tokens/s, ETA) refreshed in place.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from launcher import logs as L
from launcher import progress as P
from launcher import tail as tails
from launcher.backends.base import Job
from launcher.manifest import Manifest, RunState
from launcher.sweep import Sweep, load_sweep
from tests.conftest import REPO, cluster_reason, prebuild_tiny_model, start_requeued_soon


def launcher(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "launcher", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200", **(env or {})})


def sweep_file(tmp: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def wait_for(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- local, for real -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_run_followed_to_the_end_and_ctrl_c_leaves_it_running(tmp_path: Path, tiny_model: Path,
                                                                    embedded: Path) -> None:
    steps = 10
    p = sweep_file(tmp_path, f"name: lg\nbase:\n  model: {{name_or_path: {tiny_model}}}\n"
                   f"  data: {{root: {embedded}, max_instances_per_task: 8, max_instances_per_eval_task: 2,"
                   " max_source_length: 96}\n"
                   f"  optim: {{max_steps: {steps}, per_device_batch_size: 4}}\n  eval: {{max_new_tokens: 4}}\n"
                   "  checkpoint: {every_steps: 4}\n  logging: {every_steps: 1, progress: false}\n")
    runs = tmp_path / "runs"
    submit = launcher("submit", str(p), "--runs-root", str(runs), env={"TK_DEBUG_STEP_DELAY": "0.4"})
    manifest = runs / "lg" / "manifest.json"
    run_id = wait_for(lambda: manifest.is_file() and next(iter(orjson.loads(manifest.read_bytes())["runs"]), None),
                      120, "the local job in the manifest")
    run_dir = runs / "lg" / run_id
    try:
        whole = launcher("logs", str(p), run_id, "--follow", "--runs-root", str(runs), "--interval", "0.2")
        quitter = launcher("logs", str(p), run_id[:6], "--follow", "--runs-root", str(runs))
        assert quitter.stdout is not None
        first = quitter.stdout.readline()
        assert first.startswith(f"# local run {run_id}: ") and first.rstrip().endswith("launcher.log"), first
        wait_for(lambda: P.read_progress(run_dir).step >= 2, 120, "two training steps")
        # the summary while it runs: step x/10, a loss, tokens/s and an ETA
        summary = subprocess.run([sys.executable, "-m", "launcher", "logs", str(p), "--runs-root", str(runs)],
                                 cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        assert summary.returncode == 0, summary.stderr
        assert "1 running" in summary.stdout and f"/{steps}" in summary.stdout, summary.stdout
        quitter.send_signal(signal.SIGINT)  # Ctrl-C: stop following ...
        _, err = quitter.communicate(timeout=30)
        assert quitter.returncode == 0 and "stopped following (the job keeps running)" in err, err
        assert submit.poll() is None and not (run_dir / "DONE").exists()  # ... the job runs on
        assert P.read_progress(run_dir).step < steps
        out, err = submit.communicate(timeout=300)
        assert submit.returncode == 0, err[-2000:]
        # the follower ends by itself when the run ends, with everything the trainer wrote
        out, err = whole.communicate(timeout=60)
        assert whole.returncode == 0, err
        assert (run_dir / "DONE").is_file()
        assert out.splitlines()[-1] == (run_dir / "launcher.log").read_text().splitlines()[-1]
        assert "rougeL" in out.splitlines()[-1]
    finally:
        for proc in (submit,):
            if proc.poll() is None:
                proc.kill()
    r = subprocess.run([sys.executable, "-m", "launcher", "logs", str(p), run_id, "--tail", "1", "--runs-root",
                        str(runs)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2 and "rougeL" in r.stdout.splitlines()[1]
    r = subprocess.run([sys.executable, "-m", "launcher", "logs", str(p), "--runs-root", str(runs)], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert "1 completed" in r.stdout and f"{steps}/{steps}" in r.stdout and "done" in r.stdout
    r = subprocess.run([sys.executable, "-m", "launcher", "logs", str(p), "nope", "--runs-root", str(runs)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "'nope' is not a run of this sweep" in r.stderr


# --- the summary -------------------------------------------------------------------------------------------------


def hand_made_sweep(tmp: Path) -> tuple[Sweep, Manifest]:
    p = sweep_file(tmp, "name: hm\nbase: {model: {name_or_path: m}, optim: {max_steps: 100}}\ngrid: {seed: [1, 2]}\n")
    sweep = load_sweep(p)
    manifest = Manifest(tmp / "runs", sweep)
    for run in sweep.runs:
        manifest.run_dir(run).mkdir(parents=True)
    return sweep, manifest


def append(run_dir: Path, *records: dict) -> None:
    with open(run_dir / "train_log.jsonl", "ab") as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")


def set_total(run_dir: Path, total: int) -> None:
    """What the trainer writes once it has planned its schedule."""
    (run_dir / "status.json").write_bytes(orjson.dumps({"state": "running", "total_steps": total}))


def test_progress_eta_and_total_steps(tmp_path: Path) -> None:
    sweep, manifest = hand_made_sweep(tmp_path)
    d = manifest.run_dir(sweep.runs[0])
    append(d, *({"step": s, "loss": 3.0 - s / 10, "nonpad_tokens_per_s": 1234.0, "time": 1000.0 + s} for s in range(1, 5)))
    append(d, {"event": "resumed", "step": 4, "checkpoint": "step-000000004"})
    append(d, *({"step": s, "loss": 2.0, "nonpad_tokens_per_s": 999.0, "time": 5000.0 + s / 2} for s in range(5, 11)))
    (d / "train_log.jsonl").open("ab").write(b'{"step": 11, "lo')  # a torn last line while the trainer appends
    # a status.json without total_steps (not training yet, or an older trainer): the step alone, no ETA
    (d / "status.json").write_bytes(orjson.dumps({"state": "running"}))
    p = P.read_progress(d)
    assert (p.step, p.total_steps, p.loss, p.tokens_per_s, p.resumed, p.eta_s) == (10, None, 2.0, 999.0, 1, None)
    set_total(d, 100)
    p = P.read_progress(d)
    assert (p.step, p.total_steps, p.loss, p.tokens_per_s, p.resumed) == (10, 100, 2.0, 999.0, 1)
    assert p.steps_per_s == pytest.approx(2.0)  # measured since the resume only
    assert p.eta_s == pytest.approx(45.0)


def test_summary_refreshes_in_place_until_no_run_is_active(tmp_path: Path) -> None:
    from rich.console import Console

    sweep, manifest = hand_made_sweep(tmp_path)
    a, b = sweep.runs
    da = manifest.run_dir(a)
    set_total(da, 100)
    append(da, {"step": 1, "loss": 2.5, "nonpad_tokens_per_s": 1500.0, "time": 100.0})
    script = iter([["running", "pending"], ["running", "running"], ["completed", "running"], ["completed", "failed"]])
    calls: list[int] = []

    def states() -> list[RunState]:
        calls.append(1)
        append(da, {"step": 1 + 5 * len(calls), "loss": 2.0, "nonpad_tokens_per_s": 1500.0, "time": 100.0 + 5 * len(calls)})
        return [RunState(r.run_id, s) for r, s in zip(sweep.runs, next(script), strict=True)]

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160, color_system=None)
    assert P.summary(sweep, manifest, follow=True, interval=0.01, states_fn=states, console=console) == 0
    assert len(calls) == 4  # stopped once nothing was pending or running
    text = buf.getvalue()
    assert "\x1b[" in text  # redrawn in place (cursor movement), not appended
    assert "hm: 2 runs — 1 pending, 1 running" in text and "1 completed, 1 failed" in text
    assert "6/100" in text and "2.0000" in text and "1,500" in text and "ETA" in text
    assert "done" in text


# --- SLURM ------------------------------------------------------------------------------------------------------


def slurm_run(tmp: Path) -> tuple[Path, Sweep, Manifest, Path, Path]:
    p = sweep_file(tmp, "name: sl\nbase: {model: {name_or_path: m}, optim: {max_steps: 20}}\n")
    sweep = load_sweep(p)
    manifest = Manifest(tmp / "runs", sweep)
    run = sweep.runs[0]
    manifest.record(run, "slurm", Job(run.run_id, "4242_0"))
    manifest.run_dir(run).mkdir(parents=True, exist_ok=True)
    folder = manifest.dir / ".submitit"
    folder.mkdir()
    return p, sweep, manifest, folder / "4242_0_0_log.out", folder / "4242_0_0_log.err"


def attempt_text(n: int) -> tuple[str, str]:
    """What a TrainerJob attempt writes (as seen on the CI cluster): submitit INFO in stdout, warnings in both."""
    start = (f"submitit INFO (2024-01-01 00:0{n}:00,000) - Starting with JobEnvironment(job_id=4242_0, hostname=vm, "
             "local_rank=0(1), node=0(1), global_rank=0(1))\n"
             "submitit INFO (2024-01-01 00:00:00,000) - Loading pickle: runs/sl/.submitit/4242_0_submitted.pkl\n")
    out = start + f"+ /usr/bin/python -m trainer run --config launch.yaml\nattempt {n} stdout line\n"
    err = f"Loading weights: 100%|####| 51/51\nattempt {n} stderr line\n"
    return out, err


PREEMPTED_OUT = ("runs/sl/x: stopped at step 3 by signal 12; state saved\n"
                 "submitit WARNING (2024-01-01 00:01:30,000) - Caught signal SIGUSR2 on vm: this job is preempted.\n"
                 "submitit INFO (2024-01-01 00:01:30,000) - Requeued job 4242 (3 remaining timeouts)\n")
PREEMPTED_ERR = ("submitit WARNING (2024-01-01 00:01:30,000) - Caught signal SIGUSR2 on vm: this job is preempted.\n"
                 "slurmstepd-vm: error: *** STEP 4242.0 ON vm CANCELLED AT 2024-01-01T00:01:30 DUE TO JOB REQUEUE ***\n"
                 "slurmstepd-vm: error: *** JOB 4242 ON vm CANCELLED AT 2024-01-01T00:01:30 DUE TO JOB REQUEUE ***\n"
                 "submitit WARNING (2024-01-01 00:01:30,000) - Bypassing signal SIGCONT\n"
                 "srun: got SIGCONT\nsrun: forcing job termination\nsrun: error: vm: task 0: Terminated\n")


def test_slurm_shows_the_newest_attempt_with_a_line_per_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    p, sweep, manifest, out_f, err_f = slurm_run(tmp_path)
    o1, e1 = attempt_text(1)
    o2, e2 = attempt_text(2)
    out_f.write_text(o1 + PREEMPTED_OUT + o2)
    err_f.write_text(e1 + PREEMPTED_ERR + e2)
    append(manifest.run_dir(sweep.runs[0]), {"step": 3, "loss": 1.0}, {"event": "resumed", "step": 3,
                                                                        "checkpoint": "step-000000003"})
    monkeypatch.setattr(tails, "job_state", lambda backend, job: "running")
    buf = io.StringIO()
    assert L.logs(sweep, tmp_path / "runs", sweep.runs[0].run_id, out=buf) == 0
    text = buf.getvalue()
    assert "# slurm job 4242_0 of run" in text and "attempt 2 of 2 (requeued 1x)" in text
    assert "# --- restart 1: job requeued (preempted or timed out); the trainer resumed at step 3 (step-000000003)" in text
    assert "attempt 2 stdout line" in text and "attempt 1 stdout line" not in text and "stopped at step" not in text
    err = capsys.readouterr().err
    assert "attempt 2 stderr line" in err and "attempt 1 stderr line" not in err and "REQUEUE" not in err

    # following: a second requeue appears while we watch, then the job ends
    state = {"s": "running"}
    monkeypatch.setattr(tails, "job_state", lambda backend, job: state["s"])

    def cluster() -> None:
        time.sleep(0.5)
        o3, e3 = attempt_text(3)
        with open(out_f, "a") as fh:
            fh.write(PREEMPTED_OUT + o3)
        with open(err_f, "a") as fh:
            fh.write(PREEMPTED_ERR + e3)
        time.sleep(0.3)
        append(manifest.run_dir(sweep.runs[0]), {"event": "resumed", "step": 6, "checkpoint": "step-000000006"})
        time.sleep(0.5)
        with open(out_f, "a") as fh:
            fh.write("rougeL 1.00  exact_match 0.00\n")
        state["s"] = "completed"

    t = threading.Thread(target=cluster)
    t.start()
    buf = io.StringIO()
    assert L.logs(sweep, tmp_path / "runs", sweep.runs[0].run_id, follow=True, tail=0, interval=0.05, out=buf) == 0
    t.join()
    text = buf.getvalue()
    assert "# --- restart 2: job requeued" in text
    assert "# --- the trainer resumed at step 6 (step-000000006)" in text
    assert "resumed at step 3" not in text.split("# --- restart 2")[1]  # the old resume is not repeated
    assert text.rstrip().endswith("rougeL 1.00  exact_match 0.00") and "attempt 3 stdout line" in text
    assert "attempt 2 stdout line" not in text  # --tail 0: only what came after




@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_logs_on_a_real_cluster_across_a_requeue(tmp_path: Path) -> None:
    reason = cluster_reason()
    if reason:
        pytest.skip(reason)
    prebuild_tiny_model()
    p = sweep_file(tmp_path, f"name: slog\nbase: {REPO / 'trainer' / 'configs' / 'tiny-cpu.yaml'}\n"
                   "resources: {cpus: 1, memory: 3G, time: '00:15:00'}\n"
                   "set: {data.max_instances_per_task: 20, data.max_instances_per_eval_task: 2, "
                   "optim.per_device_batch_size: 4, optim.max_steps: 24, checkpoint.every_steps: 8, "
                   "logging.every_steps: 1, eval.max_new_tokens: 4}\n"
                   "backend: {slurm: {setup: ['export TK_DEBUG_STEP_DELAY=0.5']}}\n")
    runs = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", str(p), "--backend", "slurm", "--runs-root",
                        str(runs)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    sweep = load_sweep(p)
    run = sweep.runs[0]
    (job,) = Manifest(runs, sweep).jobs(run.run_id)
    follower = launcher("logs", str(p), run.run_id, "--follow", "--runs-root", str(runs))
    run_dir = runs / "slog" / run.run_id
    try:
        wait_for(lambda: P.read_progress(run_dir).step >= 3, 300, "three steps on the cluster")
        subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
        start_requeued_soon(job.job_id)
        out, err = follower.communicate(timeout=600)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err[-3000:]
    assert (run_dir / "DONE").is_file(), out[-3000:] + err[-3000:]
    assert "# --- restart 1: job requeued" in out and "the trainer resumed at step" in out, out[-3000:]
    assert "rougeL" in out
    r = subprocess.run([sys.executable, "-m", "launcher", "logs", str(p), run.run_id, "--runs-root", str(runs)],
                       cwd=REPO, capture_output=True, text=True)
    assert "attempt 2 of 2 (requeued 1x)" in r.stdout and "# --- restart 1:" in r.stdout


def test_logs_of_a_run_not_started_say_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from launcher import cli
    from launcher.backends.base import NotStartedError
    from ni.cli_util import run_cli
    from ni.errors import ConfigError

    p = sweep_file(tmp_path, "name: idle\nbase: {model: {name_or_path: tiny}}\n")
    run = load_sweep(p).runs[0]
    runs = tmp_path / "runs"
    with pytest.raises(NotStartedError, match=rf"{run.run_id}/launcher.log: no log yet \(run {run.run_id} was not started "
                       r"here\) Submit it: python -m launcher submit ") as e:
        L.logs(load_sweep(p), runs, run.run_id)
    assert not isinstance(e.value, ConfigError)  # nothing is wrong with the sweep: the run has not started
    capsys.readouterr()
    assert run_cli(cli.main, ["logs", str(p), run.run_id, "--runs-root", str(runs)]) == 2
    assert capsys.readouterr().err == f"error: {e.value}\n"  # the command's one line, as before


# --- Beaker, through the fake -------------------------------------------------------------------------------------


BEAKER = ("name: bk\nbase: {model: {name_or_path: tiny}}\ngrid: {seed: [1, 2]}\n"
          "backend:\n  beaker: {workspace: ai2/x, clusters: [ai2/c], image: tk-lab-trainer}\n")


def test_beaker_logs_of_the_newest_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher import backends, cli
    from launcher.backends.beaker import BeakerBackend
    from tests.beaker_fake import FakeBeakerClient

    p = sweep_file(tmp_path, BEAKER)
    sweep = load_sweep(p)
    resumed, plain = (r.run_id for r in sweep.runs)
    fake = FakeBeakerClient({resumed: "preempt-then-succeed", plain: "running"})
    monkeypatch.setattr(backends, "get_backend", lambda name, **kw: BeakerBackend(client=fake))
    runs = tmp_path / "runs"
    assert cli.main(["submit", str(p), "--backend", "beaker", "--runs-root", str(runs)]) == 0
    wid = fake.created[0].workload_id
    fake.log_lines[f"{wid}-J1R0"] = [b"resumed from step-000000010\n", b"step 11 loss 1.2\nstep 12 ", b"loss 1.1\n",
                                     b"rougeL 40.0"]
    buf = io.StringIO()
    assert L.logs(sweep, runs, resumed, follow=True, tail=50, out=buf) == 0
    lines = buf.getvalue().splitlines()
    assert lines[0] == (f"# beaker workload {wid} of run {resumed}: 2 job(s); showing the newest, {wid}-J1R0 "
                        "(completed)")
    assert lines[1] == f"# --- restart 1: job {wid}-J0R0 ended preempted; the next job took over"
    assert lines[2:] == ["resumed from step-000000010", "step 11 loss 1.2", "step 12 loss 1.1", "rougeL 40.0"]
    assert fake.log_requests == [(f"{wid}-J1R0", True, 50)]  # beaker-py: job.logs(job, follow=True, tail_lines=50)

    # Ctrl-C while following: stop, never cancel
    class Interrupted(FakeBeakerClient):
        def logs(self, job, follow=False, tail_lines=None):
            yield from list(super().logs(job, follow, tail_lines))[:1]
            raise KeyboardInterrupt

    stuck = Interrupted.__new__(Interrupted)
    stuck.__dict__.update(fake.__dict__)
    monkeypatch.setattr(backends, "get_backend", lambda name, **kw: BeakerBackend(client=stuck))
    buf = io.StringIO()
    assert L.logs(sweep, runs, plain, follow=True, out=buf) == 0
    assert "1 job(s); showing the newest" in buf.getvalue() and "scripted log line" in buf.getvalue()
    assert stuck.cancelled == [] and fake.cancelled == []
    assert cli.main(["logs", str(p), plain, "--runs-root", str(runs)]) == 0


# --- a controller outage (issue 14) ----------------------------------------------------------------------------


def test_summary_goes_on_through_an_outage_and_says_so(tmp_path: Path) -> None:
    """'unknown' (the controller did not answer) is not an end: the live summary keeps refreshing, shows
    "unknown (controller unreachable)", and ends once the runs have ended."""
    from rich.console import Console

    sweep, manifest = hand_made_sweep(tmp_path)
    down = "controller unreachable: slurm could not be asked"
    script = iter([[("running", ""), ("pending", "")], [("running", ""), ("unknown", down)],
                   [("unknown", down), ("unknown", down)], [("running", ""), ("running", "")],
                   [("completed", ""), ("cancelled", "")]])
    calls: list[int] = []

    def states() -> list[RunState]:
        calls.append(1)
        return [RunState(r.run_id, s, d) for r, (s, d) in zip(sweep.runs, next(script), strict=True)]

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160, color_system=None)
    assert P.summary(sweep, manifest, follow=True, interval=0.01, states_fn=states, console=console) == 0
    assert len(calls) == 5  # through both refreshes of the outage, to the end
    text = buf.getvalue()
    assert "unknown (controller unreachable)" in text and "hm: 2 runs — 2 unknown" in text
    assert "1 cancelled, 1 completed" in text


def test_following_a_slurm_run_goes_on_while_the_controller_does_not_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outage of any length is not the end of a job (unlike a job SLURM no longer knows, given a minute)."""
    p, sweep, manifest, out_f, err_f = slurm_run(tmp_path)
    o1, e1 = attempt_text(1)
    out_f.write_text(o1)
    err_f.write_text(e1)
    answers = iter([None] * 6 + ["running", "completed"])
    calls: list[object] = []

    def job_state(backend: str, job: Job) -> object:
        calls.append(job)
        return next(answers)

    clock = [0.0]

    def monotonic() -> float:  # every look is ten minutes later
        clock[0] += 600.0
        return clock[0]

    monkeypatch.setattr(tails, "job_state", job_state)
    monkeypatch.setattr(time, "monotonic", monotonic)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    buf = io.StringIO()
    assert L.logs(sweep, tmp_path / "runs", sweep.runs[0].run_id, follow=True, tail=0, interval=0.01, out=buf) == 0
    text = buf.getvalue()
    assert len(calls) == 8  # asked until the job had ended
    assert text.count("# slurm does not answer (controller unreachable); still following") == 1
    assert "# slurm answers again: job 4242_0 is running" in text
