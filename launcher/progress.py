"""A sweep's progress from its run directories: per run step / loss / tokens/s and an ETA from the recent steps
per second (`read_progress`), and the one-screen summary of `python -m launcher logs SWEEP` and the live view
(`summary`), refreshed in place with `--follow`. The total a run counts to is the one its trainer wrote into
status.json; a run without one (not training yet, or written by an older trainer) shows its step alone."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.manifest import Manifest, RunState
from launcher.states import sweep_states
from launcher.sweep import Sweep
from ni.run_layout import RunLayout

TERMINAL_RUN_STATES = ("completed", "failed", "cancelled", "missing", "preempted", "new")


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


def read_progress(run_dir: Path) -> Progress:
    layout = RunLayout(run_dir)
    p = Progress(total_steps=layout.read_status().total_steps)
    since_resume: list[dict[str, Any]] = []
    for rec in layout.train_log():
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
        p = read_progress(manifest.run_dir(run))
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
