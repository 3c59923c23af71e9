"""`python -m launcher logs SWEEP [RUN_ID] [--follow] [--tail N]`: a run's logs, whatever the backend ran it.

- local: the run's `launcher.log` (the trainer's stdout and stderr, appended by every local attempt);
- SLURM: the submitit stdout/stderr files of the run's newest job (`runs/<sweep>/.submitit/<job>_0_log.out/.err`).
  A requeued job appends to the same files; each attempt starts with submitit's "Starting with JobEnvironment"
  line in stdout (and ends with SLURM's "DUE TO JOB REQUEUE" in stderr), so only the newest attempt is shown, after one line per restart (with the step the trainer resumed at,
  from the run's `train_log.jsonl`);
- Beaker: the logs of the newest job of the run's workload through the Beaker client (beaker-py's
  `job.logs(job, follow=True)`); a retried or preempted-and-resumed experiment has several jobs: the latest is
  shown, after one line per earlier job.

Without RUN_ID: a one-screen summary of the sweep (state counts; per run step / loss / tokens/s from its
`train_log.jsonl` and an ETA from the recent steps per second), refreshed in place with `--follow`.

Following never touches a job: Ctrl-C stops following, the job runs on.
"""

from __future__ import annotations

import math
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
from launcher.manifest import Manifest, RunState
from launcher.states import NotStartedError, sweep_states
from launcher.sweep import PlannedRun, Sweep
from ni.errors import ConfigError

TERMINAL_RUN_STATES = ("completed", "failed", "cancelled", "missing", "preempted", "new")
# submitit logs INFO to the task's stdout: each attempt of a (requeued) job starts with this line
SUBMITIT_ATTEMPT = re.compile(r"submitit INFO .* - Starting with JobEnvironment")
# stderr has no start line: an attempt ends with SLURM's requeue notice and the aftermath of the killed step
REQUEUED = re.compile(r"DUE TO JOB REQUEUE")
AFTERMATH = re.compile(r"^(slurmstepd|srun)[:-]|Bypassing signal|Caught signal")


# --- progress from the run directory -----------------------------------------------------------------------


@dataclass
class Progress:
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    steps_per_s: float | None = None
    resumed: int = 0

    @property
    def eta_s(self) -> float | None:
        if self.total_steps is None or not self.steps_per_s or self.step >= self.total_steps:
            return None
        return (self.total_steps - self.step) / self.steps_per_s


def read_train_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of `train_log.jsonl` (a torn last line, while the trainer appends, is skipped)."""
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return []
    out = []
    for line in log.read_bytes().splitlines():
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def total_steps(run_dir: Path, run: PlannedRun | None, world_size: int = 1) -> int | None:
    """The run's optimizer steps: `optim.max_steps`, else the newest checkpoint's `trainer_state.json`, else
    computed as the trainer does (epochs x steps per epoch, from the training split's size) when the data is here."""
    cfg = run.config if run is not None else None
    if cfg is not None and not cfg.do_train:
        return 0
    if cfg is not None and cfg.optim.max_steps is not None:
        return cfg.optim.max_steps
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("step-*") if (p / "COMPLETE").is_file()) \
        if (run_dir / "checkpoints").is_dir() else []
    if ckpts:
        try:
            return int(orjson.loads((ckpts[-1] / "trainer_state.json").read_bytes())["total_steps"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
    if cfg is None:
        return None
    return _computed_total_steps(cfg, world_size)


_TOTALS: dict[str, int | None] = {}


def _computed_total_steps(cfg: Any, world_size: int) -> int | None:
    key = f"{cfg.digest()}:{world_size}"
    if key not in _TOTALS:
        _TOTALS[key] = None
        try:
            from ni.data import load_split

            root = cfg.data.root
            if root is None:
                from ni.synthetic import ensure_default_data

                root = str(ensure_default_data())
            d = cfg.data
            data = load_split(root, d.track, "train", d.max_instances_per_task, cfg.seed, d.task_limit)
            if data is not None and len(data):
                o = cfg.optim
                per_epoch = math.ceil(math.ceil(len(data) / o.per_device_batch_size) / (world_size * o.grad_accum))
                _TOTALS[key] = math.ceil(o.epochs * per_epoch)
        except Exception:  # data not reachable from here: no ETA, never a crash
            _TOTALS[key] = None
    return _TOTALS[key]


def read_progress(run_dir: Path, run: PlannedRun | None = None) -> Progress:
    records = read_train_log(run_dir)
    world = 1
    status = run_dir / "status.json"
    if status.is_file():
        try:
            world = int(orjson.loads(status.read_bytes()).get("world_size", 1) or 1)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            world = 1
    p = Progress(total_steps=total_steps(run_dir, run, world))
    since_resume: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("event") == "resumed":
            p.resumed += 1
            since_resume = []
            continue
        if "loss" in rec and "step" in rec:
            since_resume.append(rec)
        p.step = max(p.step, int(rec.get("step", 0) or 0))
    if since_resume:
        last = since_resume[-1]
        p.loss = float(last["loss"])
        if last.get("nonpad_tokens_per_s") is not None:
            p.tokens_per_s = float(last["nonpad_tokens_per_s"])
        timed = [r for r in since_resume[-20:] if isinstance(r.get("time"), int | float)]
        if len(timed) >= 2 and timed[-1]["time"] > timed[0]["time"]:
            p.steps_per_s = (timed[-1]["step"] - timed[0]["step"]) / (timed[-1]["time"] - timed[0]["time"])
    return p


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# --- the summary ---------------------------------------------------------------------------------------------


def render_summary(sweep: Sweep, manifest: Manifest, states: list[RunState]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    table = Table(title=None, expand=False)
    for c in ("run id", "varied", "state", "step", "loss", "tok/s", "ETA"):
        table.add_column(c, justify="right" if c in ("step", "loss", "tok/s", "ETA") else "left")
    etas = []
    for run, st in zip(sweep.runs, states, strict=True):
        p = read_progress(manifest.run_dir(run), run)
        running = st.state == "running"
        eta = p.eta_s if running else None
        if eta is not None:
            etas.append(eta)
        step = f"{p.step}/{p.total_steps}" if p.total_steps else (str(p.step) if p.step else "")
        varied = ", ".join(f"{k}={v}" for k, v in run.varied.items())
        label = st.state + (f" (resumed x{p.resumed})" if p.resumed else "")
        if st.state == "unknown" and st.detail:  # e.g. "unknown (controller unreachable)": not ended, not lost
            label += f" ({st.detail.split(':')[0]})"
        table.add_row(run.run_id, varied, label, step,
                      f"{p.loss:.4f}" if p.loss is not None else "",
                      f"{p.tokens_per_s:,.0f}" if p.tokens_per_s is not None else "",
                      fmt_duration(eta) if running else ("done" if st.state == "completed" else ""))
    head = f"{sweep.name}: {len(states)} runs — " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    if etas:
        head += f" — ETA {fmt_duration(max(etas))}"
    return Group(Text(head, style="bold"), table)


def summary(sweep: Sweep, manifest: Manifest, follow: bool, interval: float = 5.0,
            states_fn: Callable[[], list[RunState]] | None = None, console: Any = None,
            max_refreshes: int | None = None) -> int:
    """Print the summary once, or keep it refreshed in place until no run is active (or Ctrl-C)."""
    from rich.console import Console
    from rich.live import Live

    get_states = states_fn or (lambda: sweep_states(sweep, manifest))
    console = console or Console(width=max(Console().width, 120))
    states = get_states()
    if not follow:
        console.print(render_summary(sweep, manifest, states))
        return 0
    n = 0
    try:
        with Live(render_summary(sweep, manifest, states), console=console, refresh_per_second=4,
                  auto_refresh=False) as live:
            while any(s.state not in TERMINAL_RUN_STATES for s in states):
                n += 1
                if max_refreshes is not None and n > max_refreshes:
                    break
                time.sleep(interval)
                states = get_states()
                live.update(render_summary(sweep, manifest, states), refresh=True)
    except KeyboardInterrupt:
        print("stopped following (jobs keep running)", file=sys.stderr)
    return 0


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
    return [r for r in read_train_log(run_dir) if r.get("event") == "resumed"]


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
    if (run_dir / "DONE").is_file():
        return True
    try:
        state = orjson.loads((run_dir / "status.json").read_bytes()).get("state")
    except (OSError, orjson.JSONDecodeError):
        return False
    return state in ("failed", "preempted", "completed")


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
