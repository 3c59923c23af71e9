"""A SLURM run's logs: the submitit stdout/stderr files of its newest job (`runs/<sweep>/.submitit/<job>_0_log.out`
and `.err`). A requeued job appends to the same files; each attempt starts with submitit's "Starting with
JobEnvironment" line in stdout (and ends with SLURM's "DUE TO JOB REQUEUE" in stderr), so only the newest attempt
is shown, after one line per restart (with the step the trainer resumed at, from the run's train log)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import IO

from launcher import tail as tails
from launcher.backends.base import Backend, Job, LogTarget, NotStartedError
from ni.run_layout import LOG_FILE, RunLayout

# submitit logs INFO to the task's stdout: each attempt of a (requeued) job starts with this line
SUBMITIT_ATTEMPT = re.compile(r"submitit INFO .* - Starting with JobEnvironment")
# stderr has no start line: an attempt ends with SLURM's requeue notice and the aftermath of the killed step
REQUEUED = re.compile(r"DUE TO JOB REQUEUE")
AFTERMATH = re.compile(r"^(slurmstepd|srun)[:-]|Bypassing signal|Caught signal")
REQUEUE_WHY = "job requeued (preempted or timed out)"


def split_stderr_attempts(lines: list[str]) -> list[list[str]]:
    """stderr cut after each requeue notice (and the lines SLURM and submitit write while the step is killed)."""
    attempts: list[list[str]] = [[]]
    ending = False
    for line in lines:
        if REQUEUED.search(line):
            ending = True
        elif ending and not AFTERMATH.search(line):
            attempts.append([])
            ending = False
        attempts[-1].append(line)
    if ending:
        attempts.append([])  # requeued, the next attempt wrote nothing yet
    return attempts


def log_files(sweep_dir: Path, job: Job) -> tuple[Path, Path]:
    folder = sweep_dir / ".submitit"
    stem = f"{job.job_id}_0_log"  # array task 123_4 -> 123_4_0_log.out; a plain job 123 -> 123_0_log.out
    return folder / f"{stem}.out", folder / f"{stem}.err"


def logs(backend: Backend, t: LogTarget, follow: bool, tail: int | None, stream: IO[str], poll: float) -> int:
    if not t.jobs:
        raise NotStartedError(f"run {t.run.run_id}: no SLURM job in {t.manifest_path}")
    out = tails.Out(stream)
    job = t.jobs[-1]
    out_path, err_path = log_files(t.sweep_dir, job)
    out_tail, err_tail = tails.FileTail(out_path), tails.FileTail(err_path)
    out_lines, err_lines = out_tail.read_all(), err_tail.read_all()
    out_att, err_att = tails.split_attempts(out_lines, SUBMITIT_ATTEMPT), split_stderr_attempts(err_lines)
    n_att = max(len(out_att), len(err_att)) if (out_lines or err_lines) else 0
    resumed = tails.resumed_events(t.run_dir)
    head = f"# slurm job {job.job_id} of run {t.run.run_id}"
    if len(t.jobs) > 1:
        head += f" (the newest of {len(t.jobs)} jobs submitted for it)"
    head += f": attempt {max(n_att, 1)}" + (f" of {n_att} (requeued {n_att - 1}x)" if n_att > 1 else "")
    out.line(head)
    out.line(f"# {out_path}")
    out.line(f"# {err_path}")
    for k in range(1, n_att):
        out.line(tails.restart_line(k, REQUEUE_WHY, resumed))
    if not out_lines and not err_lines and not follow:
        out.line("# no output yet (the job has not started)")
    err = tails.Out(sys.stderr)
    for line in tails.last(out_att[-1] if len(out_att) == n_att else [], tail):
        out.line(line)
    for line in tails.last(err_att[-1] if len(err_att) == n_att else [], tail):
        err.line(line)
    if not follow:
        return 0
    restarts = [max(n_att - 1, 0)]
    seen_start = [any(SUBMITIT_ATTEMPT.search(x) for x in out_lines)]

    def on_line(ft: tails.FileTail, line: str) -> None:
        if ft is out_tail and SUBMITIT_ATTEMPT.search(line):
            if seen_start[0]:
                restarts[0] += 1
                out.line(tails.restart_line(restarts[0], REQUEUE_WHY, tails.resumed_events(t.run_dir)))
            seen_start[0] = True

    unknown_since: list[float] = []
    unreachable = [False]

    def running() -> bool:
        state = tails.job_state(backend, job)
        if state is None and RunLayout(t.run_dir).done():
            return False
        if state is None:  # the controller does not answer: the job may well run on; follow until it answers
            if not unreachable[0]:
                out.line("# slurm does not answer (controller unreachable); still following")
            unreachable[0] = True
            return True
        if unreachable[0]:
            out.line(f"# slurm answers again: job {job.job_id} is {state}")
            unreachable[0] = False
        if state == "unknown" and not tails.run_finished(t.run_dir):  # not known (yet or any more): allow it a minute
            unknown_since[:] = unknown_since or [time.monotonic()]
            return time.monotonic() - unknown_since[0] < 60
        unknown_since.clear()
        return state in ("pending", "running", "preempted")

    # a restart is seen before the trainer logs where it resumed: say so when the train log does
    train_log = tails.FileTail(t.run_dir / LOG_FILE)
    train_log.read_new()

    def resumed_note(line: str) -> None:
        rec = tails.json_record(line)
        if rec.get("event") == "resumed":
            out.line(f"# --- the trainer resumed at step {rec.get('step')} ({rec.get('checkpoint', '')})")

    tails.follow_files([(out_tail, out.line), (err_tail, err.line), (train_log, resumed_note)], running, poll, on_line)
    return 0
