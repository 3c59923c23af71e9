"""`python -m launcher logs SWEEP [RUN_ID] [--follow] [--tail N]`: a run's logs, whatever the backend ran it.

- local: the run's `launcher.log` (the trainer's stdout and stderr, appended by every local attempt);
- SLURM: the submitit stdout/stderr files of the run's newest job (`runs/<sweep>/.submitit/<job>_0_log.out/.err`).
  A requeued job appends to the same files; each attempt starts with submitit's "Starting with JobEnvironment"
  line in stdout (and ends with SLURM's "DUE TO JOB REQUEUE" in stderr), so only the newest attempt is shown, after one line per restart (with the step the trainer resumed at,
  from the run's `train_log.jsonl`);
- Beaker: the logs of the newest job of the run's workload through the Beaker client (beaker-py's
  `job.logs(job, follow=True)`); a retried or preempted-and-resumed experiment has several jobs: the latest is
  shown, after one line per earlier job.

Without RUN_ID: a one-screen summary of the sweep (`launcher.progress`), refreshed in place with `--follow`.

Following never touches a job: Ctrl-C stops following, the job runs on.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from launcher import backends
from launcher.backends.base import BackendUnavailable, Job, JobState
from launcher.manifest import Manifest
from launcher.progress import summary
from launcher.states import NotStartedError
from launcher.sweep import PlannedRun, Sweep
from ni.errors import ConfigError
from ni.run_layout import RunLayout

# submitit logs INFO to the task's stdout: each attempt of a (requeued) job starts with this line
SUBMITIT_ATTEMPT = re.compile(r"submitit INFO .* - Starting with JobEnvironment")
# stderr has no start line: an attempt ends with SLURM's requeue notice and the aftermath of the killed step
REQUEUED = re.compile(r"DUE TO JOB REQUEUE")
AFTERMATH = re.compile(r"^(slurmstepd|srun)[:-]|Bypassing signal|Caught signal")


# --- following files -----------------------------------------------------------------------------------------


class FileTail:
    """New complete lines of a growing file (a partial last line waits for its newline)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def read_all(self) -> list[str]:
        return self.read_new()

    def read_new(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, 2)
                if size < self.offset:  # truncated / replaced: start over
                    self.offset, self.partial = 0, b""
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in lines]

    def flush(self) -> list[str]:
        rest = self.read_new()
        if self.partial:
            rest.append(self.partial.decode("utf-8", errors="replace"))
            self.partial = b""
        return rest


def split_attempts(lines: list[str], marker: re.Pattern[str]) -> list[list[str]]:
    """Lines cut before each attempt marker (lines before the first marker belong to the first attempt)."""
    attempts: list[list[str]] = [[]]
    for line in lines:
        if marker.search(line) and any(attempts[-1]):
            attempts.append([])
        attempts[-1].append(line)
    return attempts


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


def _tail(lines: list[str], n: int | None) -> list[str]:
    return lines if n is None or n < 0 else (lines[-n:] if n else [])


def resumed_events(run_dir: Path) -> list[dict[str, Any]]:
    return RunLayout(run_dir).resumed_events()


def _restart_line(k: int, why: str, resumed: list[dict[str, Any]]) -> str:
    where = ""
    if k - 1 < len(resumed):
        r = resumed[k - 1]
        where = f"; the trainer resumed at step {r.get('step')} ({r.get('checkpoint', '')})"
    return f"# --- restart {k}: {why}{where}"


class Out:
    """Where log lines go (stdout; our own notes too, as '# ...' lines)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


# --- the backends -----------------------------------------------------------------------------------------------


@dataclass
class Target:
    sweep: Sweep
    manifest: Manifest
    run: PlannedRun
    backend: str | None
    jobs: list[Job]

    @property
    def run_dir(self) -> Path:
        return self.manifest.run_dir(self.run)


def _job_state(backend: str, job: Job) -> JobState | None:
    """The job's state; None when the backend cannot be asked now (e.g. slurmctld down)."""
    try:
        return backends.get_backend(backend).status([job]).get(job.job_id, "unknown")
    except (OSError, ConfigError, BackendUnavailable):
        return None


def _run_finished(run_dir: Path) -> bool:
    return RunLayout(run_dir).finished()


def follow_files(files: list[tuple[FileTail, Callable[[str], None]]], still_running: Callable[[], bool],
                 poll: float, on_line: Callable[[FileTail, str], None] | None = None) -> None:
    """Print new lines of each file until `still_running()` says no, then drain once more."""
    last_check = 0.0
    running = True
    while True:
        got = False
        for tail, emit in files:
            for line in tail.read_new():
                got = True
                if on_line is not None:
                    on_line(tail, line)
                emit(line)
        if not running:
            for tail, emit in files:
                for line in tail.flush():
                    emit(line)
            return
        if time.monotonic() - last_check >= max(poll, 1.0) or not got:
            last_check = time.monotonic()
            running = still_running()
            if not running:
                continue  # drain what was written meanwhile
        time.sleep(poll)


def local_logs(t: Target, follow: bool, tail: int | None, out: Out, poll: float) -> int:
    log = t.run_dir / "launcher.log"
    n_jobs = len(t.jobs)
    resumed = resumed_events(t.run_dir)
    note = f"# local run {t.run.run_id}: {log}"
    if n_jobs > 1:
        note += f" ({n_jobs} local attempts, appended)"
    if resumed:
        note += f"; resumed at step(s) {', '.join(str(r.get('step')) for r in resumed)}"
    out.line(note)
    job = t.jobs[-1] if t.jobs else None

    def alive() -> bool:
        return job is not None and _job_state("local", job) == "running" and not _run_finished(t.run_dir)

    if not log.is_file() and not (follow and alive()):
        raise NotStartedError(f"{log}: no log yet (run {t.run.run_id} was not started here)",
                              hint=f"Submit it: python -m launcher submit {t.sweep.path}")
    ft = FileTail(log)
    for line in _tail(ft.read_all(), tail):
        out.line(line)
    if follow:
        follow_files([(ft, out.line)], alive, poll)
    return 0


def slurm_log_files(t: Target, job: Job) -> tuple[Path, Path]:
    folder = t.manifest.dir / ".submitit"
    stem = f"{job.job_id}_0_log"  # array task 123_4 -> 123_4_0_log.out; a plain job 123 -> 123_0_log.out
    return folder / f"{stem}.out", folder / f"{stem}.err"


def slurm_logs(t: Target, follow: bool, tail: int | None, out: Out, poll: float) -> int:
    if not t.jobs:
        raise NotStartedError(f"run {t.run.run_id}: no SLURM job in {t.manifest.path}")
    job = t.jobs[-1]
    out_path, err_path = slurm_log_files(t, job)
    out_tail, err_tail = FileTail(out_path), FileTail(err_path)
    out_lines, err_lines = out_tail.read_all(), err_tail.read_all()
    out_att, err_att = split_attempts(out_lines, SUBMITIT_ATTEMPT), split_stderr_attempts(err_lines)
    n_att = max(len(out_att), len(err_att)) if (out_lines or err_lines) else 0
    resumed = resumed_events(t.run_dir)
    head = f"# slurm job {job.job_id} of run {t.run.run_id}"
    if len(t.jobs) > 1:
        head += f" (the newest of {len(t.jobs)} jobs submitted for it)"
    head += f": attempt {max(n_att, 1)}" + (f" of {n_att} (requeued {n_att - 1}x)" if n_att > 1 else "")
    out.line(head)
    out.line(f"# {out_path}")
    out.line(f"# {err_path}")
    for k in range(1, n_att):
        out.line(_restart_line(k, "job requeued (preempted or timed out)", resumed))
    if not out_lines and not err_lines and not follow:
        out.line("# no output yet (the job has not started)")
    err = Out(sys.stderr)
    for line in _tail(out_att[-1] if len(out_att) == n_att else [], tail):
        out.line(line)
    for line in _tail(err_att[-1] if len(err_att) == n_att else [], tail):
        err.line(line)
    if not follow:
        return 0
    restarts = [max(n_att - 1, 0)]
    seen_start = [any(SUBMITIT_ATTEMPT.search(x) for x in out_lines)]

    def on_line(ft: FileTail, line: str) -> None:
        if ft is out_tail and SUBMITIT_ATTEMPT.search(line):
            if seen_start[0]:
                restarts[0] += 1
                out.line(_restart_line(restarts[0], "job requeued (preempted or timed out)", resumed_events(t.run_dir)))
            seen_start[0] = True

    unknown_since: list[float] = []
    unreachable = [False]

    def alive() -> bool:
        state = _job_state("slurm", job)
        if state is None and (t.run_dir / "DONE").is_file():
            return False
        if state is None:  # the controller does not answer: the job may well run on; follow until it answers
            if not unreachable[0]:
                out.line("# slurm does not answer (controller unreachable); still following")
            unreachable[0] = True
            return True
        if unreachable[0]:
            out.line(f"# slurm answers again: job {job.job_id} is {state}")
            unreachable[0] = False
        if state == "unknown" and not _run_finished(t.run_dir):  # not known (yet or any more): allow it a minute
            unknown_since[:] = unknown_since or [time.monotonic()]
            return time.monotonic() - unknown_since[0] < 60
        unknown_since.clear()
        return state in ("pending", "running", "preempted")

    # a restart is seen before the trainer logs where it resumed: say so when train_log.jsonl does
    train_log = FileTail(t.run_dir / "train_log.jsonl")
    train_log.read_new()

    def resumed_note(line: str) -> None:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if isinstance(rec, dict) and rec.get("event") == "resumed":
            out.line(f"# --- the trainer resumed at step {rec.get('step')} ({rec.get('checkpoint', '')})")

    follow_files([(out_tail, out.line), (err_tail, err.line), (train_log, resumed_note)], alive, poll, on_line)
    return 0


def beaker_logs(t: Target, follow: bool, tail: int | None, out: Out, client: Any = None) -> int:
    from launcher.backends.beaker import BeakerBackend, _leader, current_attempt, job_state

    if not t.jobs:
        raise NotStartedError(f"run {t.run.run_id}: no Beaker experiment in {t.manifest.path}")
    workload_id = t.jobs[-1].job_id
    backend = BeakerBackend(client=client) if client is not None else _beaker_backend()
    shown: set[str] = set()
    first = True
    while True:
        jobs = backend.client.list_jobs(workload_id)
        attempt = current_attempt(jobs)
        leader = _leader(attempt)
        if first:
            line = f"# beaker workload {workload_id} of run {t.run.run_id}: {_count_attempts(jobs)} job(s)"
            out.line(line + (f"; showing the newest, {leader.id} ({job_state(leader)})" if leader else ""))
            earlier = _attempt_ids(jobs)[:-1]
            for k, jid in enumerate(earlier, 1):
                j = next(x for x in jobs if x.id == jid)
                out.line(f"# --- restart {k}: job {jid} ended {job_state(j)}; the next job took over")
            first = False
        if leader is None:
            out.line("# no job scheduled yet")
            if not follow:
                return 0
            time.sleep(5)
            continue
        if leader.id in shown:
            return 0
        shown.add(leader.id)
        if len(shown) > 1:
            out.line(f"# --- restart: a newer job {leader.id} took over ({_count_attempts(jobs)} jobs in all)")
        for text in _beaker_lines(backend.client.logs(leader, follow=follow, tail_lines=tail)):
            out.line(text)
        if not follow:
            return 0
        # the job ended: a retry of a preempted job may have started meanwhile
        newest = _leader(current_attempt(backend.client.list_jobs(workload_id)))
        if newest is None or newest.id in shown:
            return 0


def _beaker_backend() -> Any:
    return backends.get_backend("beaker")


def _attempt_ids(jobs: list[Any]) -> list[str]:
    """One id per attempt (the leader's, or the job's own id on one node), oldest first."""
    seen: dict[str, str] = {}
    for j in jobs:
        group = j.system_details.replica_group_details.id or j.id
        if group not in seen or j.system_details.replica_group_details.is_leader_replica:
            seen[group] = j.id
    return list(seen.values())


def _count_attempts(jobs: list[Any]) -> int:
    return len(_attempt_ids(jobs))


def _beaker_lines(logs: Iterable[Any]) -> Iterator[str]:
    """beaker-py JobLog messages (bytes, one or more lines each) as text lines."""
    partial = ""
    for item in logs:
        msg = item.message if hasattr(item, "message") else item
        text = msg.decode("utf-8", errors="replace") if isinstance(msg, bytes | bytearray) else str(msg)
        parts = (partial + text).split("\n")
        partial = parts.pop()
        yield from (p.rstrip("\r") for p in parts)
    if partial:
        yield partial


# --- the command ---------------------------------------------------------------------------------------------


def find_run(sweep: Sweep, run_id: str) -> PlannedRun:
    matches = [r for r in sweep.runs if r.run_id == run_id or r.run_id.startswith(run_id)]
    if len(matches) != 1:
        ids = ", ".join(r.run_id for r in sweep.runs[:12]) + (" ..." if len(sweep.runs) > 12 else "")
        what = "matches several runs" if matches else "is not a run of this sweep"
        raise ConfigError(f"{sweep.path}: '{run_id}' {what}", hint=f"Run ids: {ids}")
    return matches[0]


def logs(sweep: Sweep, runs_root: Path, run_id: str | None, follow: bool = False, tail: int | None = 100,
         interval: float = 5.0, out: IO[str] | None = None, beaker_client: Any = None) -> int:
    manifest = Manifest(runs_root, sweep)
    try:
        if run_id is None:
            return summary(sweep, manifest, follow, interval)
        run = find_run(sweep, run_id)
        t = Target(sweep, manifest, run, manifest.backend_of(run.run_id), manifest.jobs(run.run_id))
        o = Out(out)
        poll = min(interval, 0.5)
        if t.backend == "slurm":
            return slurm_logs(t, follow, tail, o, poll)
        if t.backend == "beaker":
            return beaker_logs(t, follow, tail, o, beaker_client)
        if t.backend in ("local", None):
            return local_logs(t, follow, tail, o, poll)
        raise ConfigError(f"run {run.run_id}: unknown backend '{t.backend}' in {manifest.path}")
    except KeyboardInterrupt:
        print("\nstopped following (the job keeps running)", file=sys.stderr)
        return 0
