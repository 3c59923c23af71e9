"""`python -m launcher logs SWEEP [RUN_ID] [--follow] [--tail N]`: a run's logs, whatever the backend ran it.

With RUN_ID: the logs as the backend that ran the run keeps them (`Backend.logs`: the local `launcher.log`,
SLURM's submitit files, Beaker's job logs), the newest attempt after one line per restart.

Without RUN_ID: a one-screen summary of the sweep (state counts; per run step / loss / tokens/s from its
`train_log.jsonl` and an ETA from the recent steps per second), refreshed in place with `--follow`.

Following never touches a job: Ctrl-C stops following, the job runs on.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from launcher import backends
from launcher.backends.base import LogTarget
from launcher.manifest import Manifest, RunState
from launcher.states import sweep_states
from launcher.sweep import PlannedRun, Sweep
from ni.errors import ConfigError

TERMINAL_RUN_STATES = ("completed", "failed", "cancelled", "missing", "preempted", "new")


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


# --- the command ---------------------------------------------------------------------------------------------


def find_run(sweep: Sweep, run_id: str) -> PlannedRun:
    matches = [r for r in sweep.runs if r.run_id == run_id or r.run_id.startswith(run_id)]
    if len(matches) != 1:
        ids = ", ".join(r.run_id for r in sweep.runs[:12]) + (" ..." if len(sweep.runs) > 12 else "")
        what = "matches several runs" if matches else "is not a run of this sweep"
        raise ConfigError(f"{sweep.path}: '{run_id}' {what}", hint=f"Run ids: {ids}")
    return matches[0]


def logs(sweep: Sweep, runs_root: Path, run_id: str | None, follow: bool = False, tail: int | None = 100,
         interval: float = 5.0, out: IO[str] | None = None) -> int:
    """A run's logs, as the backend that ran it keeps them (`Backend.logs`); without a run id, the summary."""
    manifest = Manifest(runs_root, sweep)
    try:
        if run_id is None:
            return summary(sweep, manifest, follow, interval)
        run = find_run(sweep, run_id)
        target = LogTarget(sweep, run, manifest.run_dir(run), manifest.dir, manifest.jobs(run.run_id))
        backend = backends.get_backend(manifest.backend_of(run.run_id) or "local")  # never submitted: its local log
        return backend.logs(target, follow, tail, out or sys.stdout, min(interval, 0.5))
    except KeyboardInterrupt:
        print("\nstopped following (the job keeps running)", file=sys.stderr)
        return 0
