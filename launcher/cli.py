"""`python -m launcher plan|prepare|submit|status|pull|report|cancel|logs|rehearse SWEEP`: the project's front door."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher import backends
from launcher.backends import BACKENDS
from launcher.backends.base import Backend, Job
from launcher.images import check_image_revision
from launcher.logs import logs
from launcher.manifest import Manifest
from launcher.progress import TERMINAL_RUN_STATES, summary
from launcher.states import sweep_states
from launcher.sweep import MAX_RUNS, Sweep, load_sweep
from ni.cli_util import run_cli
from ni.errors import ConfigError
from ni.locks import Busy, alive, describe, read_holder
from ni.run_layout import RunLayout


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[("" if v is None else str(v)) for v in r])
    console = Console(width=200)
    console.print(title, style="bold", highlight=False)  # on its own line, not centred over the table
    console.print(table)


def _varied_columns(sweep: Sweep) -> list[str]:
    keys: list[str] = []
    for run in sweep.runs:
        keys += [k for k in run.varied if k not in keys]
    return keys


def cmd_plan(sweep: Sweep, args: argparse.Namespace) -> int:
    keys = _varied_columns(sweep)
    rows = [[r.run_id, *[r.varied.get(k) for k in keys], r.resources.gpus, r.resources.nodes, r.resources.time]
            for r in sweep.runs]
    _table(f"{sweep.name}: {len(sweep.runs)} runs", ["run id", *keys, "gpus", "nodes", "time"], rows)
    backend = backends.get_backend(args.backend)
    _warn(backend, sweep)
    if args.render:
        manifest = Manifest(args.runs_root, sweep)
        for name, text in backend.render(sweep, [manifest.spec(r) for r in sweep.runs]).items():
            print(f"--- {name}")
            print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _warn(backend: Backend, sweep: Sweep) -> None:
    """A backend's preflight warnings (settings that work, but probably not as meant), one line each."""
    for note in backend.preflight_warnings(sweep):
        print(f"warning: {note}", file=sys.stderr)


RUNNING_HERE = "running its runs in this process"  # in the lock of a submit whose backend runs the jobs itself


def cmd_submit(sweep: Sweep, args: argparse.Namespace) -> int:
    """Under the sweep's lock: two submits of one sweep never both decide to start a run (the second waits, then
    finds it running or done). The manifest is read after the lock is taken, so no submit saves a stale copy."""
    backend = backends.get_backend(args.backend)
    backend.check(sweep)  # a sweep the backend refuses leaves nothing behind, not even a lock
    what = f"launcher submit --backend {backend.name}" + (f", {RUNNING_HERE}" if backend.runs_here else "")
    lock = Manifest(args.runs_root, sweep).lock(what)
    lock.acquire(wait=True, on_wait=lambda holder: print(f"{sweep.name}: waiting for {holder} to finish submitting "
                                                         "(Ctrl-C stops waiting)", flush=True))
    try:
        code = _submit(sweep, args, Manifest(args.runs_root, sweep), backend)
    finally:
        lock.release()
    if code != 0 or backend.runs_here:  # the runs ran in this process: they have ended
        return code
    if getattr(args, "wait", False):
        return _wait(sweep, args)
    print(f"{sweep.name}: submitted; the jobs run without this command. Next: {_again(sweep, args, 'logs')} -f "
          f"(live view), then {_again(sweep, args, 'pull')} and {_again(sweep, args, 'report')}")
    return 0


def _again(sweep: Sweep, args: argparse.Namespace, command: str) -> str:
    return f"python -m launcher {command} {sweep.path} --runs-root {args.runs_root}"


def _wait(sweep: Sweep, args: argparse.Namespace) -> int:
    """The live view until every run has ended: 0 when all completed, 1 when some did not, 130 on Ctrl-C (the
    jobs keep running; the message says how to come back)."""
    summary(sweep, Manifest(args.runs_root, sweep), follow=True, interval=float(getattr(args, "interval", 5.0)))
    states = sweep_states(sweep, Manifest(args.runs_root, sweep))
    if any(s.state not in TERMINAL_RUN_STATES for s in states):
        print(f"{sweep.name}: stopped waiting; the jobs keep running. Come back with: {_again(sweep, args, 'logs')} -f "
              f"(or make sweep again: it submits nothing twice)", file=sys.stderr)
        return 130
    failed = [s.run_id for s in states if s.state != "completed"]
    if failed:
        print(f"{sweep.name}: {len(failed)} run(s) did not complete: {', '.join(failed[:10])}", file=sys.stderr)
        return 1
    return 0


def _submit(sweep: Sweep, args: argparse.Namespace, manifest: Manifest, backend: Backend) -> int:
    states = sweep_states(sweep, manifest)
    todo = set(manifest.to_submit(states))
    skipped = {s.state for s in states if s.run_id not in todo}
    runs = [r for r in sweep.runs if r.run_id in todo]
    print(f"{sweep.name}: {len(runs)} to submit, {len(sweep.runs) - len(runs)} skipped "
          f"({', '.join(sorted(skipped)) or 'none'})")
    unknown = [s.run_id for s in states if s.state == "unknown"]
    if unknown:
        print(f"{sweep.name}: {len(unknown)} run(s) not submitted: their state is unknown (controller unreachable; "
              "they may still be live); submit again once it answers", file=sys.stderr)
    if not runs:
        return 1 if unknown else 0
    _warn(backend, sweep)
    # the image must hold the code being submitted
    for note in check_image_revision(sweep, backend, allow_stale=args.allow_stale_image):
        print(f"warning: {note}", file=sys.stderr)
    specs = [manifest.write_launch_config(r) for r in runs]
    by_id = {s.run.run_id: s.run for s in specs}

    def record(job: Job) -> None:  # as each job exists: one that fails part-way leaves the others recorded
        manifest.record(by_id[job.run_id], backend.name, job)

    if not backend.runs_here:
        backend.submit(sweep, specs, record)
        return 1 if unknown else 0
    cmd_prepare(sweep, args, runs)  # the runs then only map the cache
    with _LiveView(sweep, manifest):
        backend.submit(sweep, specs, record)
    cmd_status(sweep, args)
    failed = [s.run_id for s in sweep_states(sweep, manifest) if s.state not in ("completed", "running", "pending")]
    if failed:
        print(f"{sweep.name}: {len(failed)} run(s) did not complete: {', '.join(failed[:10])}", file=sys.stderr)
        return 1
    return 0


def cmd_prepare(sweep: Sweep, args: argparse.Namespace, runs: Sequence[Any] | None = None) -> int:
    """Encode every split the sweep's runs read into the shared cache, once, before any job starts."""
    from trainer.prepare import prepare_run

    seen: set[Path] = set()
    for run in sweep.runs if runs is None else runs:
        for p in prepare_run(run.config):
            if p.entry not in seen:
                seen.add(p.entry)
                print(f"{sweep.name}: {p.split} {'encoded' if p.built else 'cached '} {p.instances:>8} instances "
                      f"{p.seconds:6.1f}s  {p.entry}")
    return 0


def cmd_status(sweep: Sweep, args: argparse.Namespace) -> int:
    manifest = Manifest(args.runs_root, sweep)
    states = sweep_states(sweep, manifest)
    keys = _varied_columns(sweep)
    rows = [[r.run_id, *[r.varied.get(k) for k in keys], s.state, s.detail] for r, s in zip(sweep.runs, states, strict=True)]
    _table(f"{sweep.name}: status", ["run id", *keys, "state", "detail"], rows)
    failed = [s for s in states if s.state in ("failed", "missing", "cancelled")]
    return 1 if failed and getattr(args, "strict", False) else 0


def cmd_pull(sweep: Sweep, args: argparse.Namespace) -> int:
    """Each run's newest job's results into its run directory, from backends whose jobs do not write it themselves."""
    manifest = Manifest(args.runs_root, sweep)
    pulled = 0
    for run in sweep.runs:
        jobs, backend = manifest.jobs(run.run_id), manifest.backend_of(run.run_id)
        if backend and jobs and backends.get_backend(backend).pull(jobs[-1], manifest.run_dir(run)):
            pulled += 1
    print(f"{sweep.name}: pulled {pulled} run(s); local and SLURM runs write to the shared run directories")
    return 0


def cmd_report(sweep: Sweep, args: argparse.Namespace) -> int:
    from evaluation.report import run_report

    manifest = Manifest(args.runs_root, sweep)
    if not manifest.dir.is_dir():
        raise ConfigError(f"{manifest.dir}: no runs of sweep {sweep.name} yet", hint="Submit the sweep first.")
    unsubmitted = [r.run_id for r in sweep.runs if not (manifest.run_dir(r)).exists()
                   and r.run_id not in manifest.data["runs"]]
    if unsubmitted:
        print(f"{sweep.name}: {len(unsubmitted)} run(s) not submitted yet: {', '.join(unsubmitted[:10])}")
    return run_report([manifest.dir], manifest.dir / "report", strict=bool(getattr(args, "strict", False)))


def cmd_cancel(sweep: Sweep, args: argparse.Namespace) -> int:
    """Under the sweep's lock, every job the manifest keeps for a run (an older one may still run). A local submit
    holding the lock is running its runs itself: it is interrupted (it stops its trainers, which checkpoint)."""
    lock = Manifest(args.runs_root, sweep).lock("launcher cancel")
    try:
        lock.acquire(wait=False)
    except Busy:
        holder = read_holder(lock.path)
        if (RUNNING_HERE in str(holder.get("what")) and holder.get("host") == socket.gethostname()
                and alive(int(holder.get("pid", 0)), holder.get("start"))):
            print(f"{sweep.name}: interrupting the local submit ({describe(holder)})", flush=True)
            os.kill(int(holder["pid"]), signal.SIGINT)
        lock.acquire(wait=True, on_wait=lambda h: print(f"{sweep.name}: waiting for {h}", flush=True))
    try:
        manifest = Manifest(args.runs_root, sweep)
        for run in sweep.runs:
            jobs, backend = manifest.jobs(run.run_id), manifest.backend_of(run.run_id)
            if jobs and backend:
                backends.get_backend(backend).cancel(jobs)
                manifest.mark_cancelled(run.run_id, jobs)
        print(f"{sweep.name}: cancel sent")
        return 0
    finally:
        lock.release()


class _LiveView:
    """A live table of the local runs (state and step), refreshed in place."""

    def __init__(self, sweep: Sweep, manifest: Manifest):
        self.sweep, self.manifest = sweep, manifest
        self.live: Any = None

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for c in ("run id", "varied", "state", "step"):
            table.add_column(c)
        for run in self.sweep.runs:
            layout = RunLayout(self.manifest.run_dir(run))
            table.add_row(run.run_id, str(run.varied), layout.read_status().state or "", str(layout.last_step()))
        return Group(Text(f"{self.sweep.name}: local runs", style="bold"), table)  # the title on a line of its own

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def __enter__(self) -> _LiveView:
        from rich.live import Live

        self.live = Live(get_renderable=self.render, refresh_per_second=2)  # re-read at each refresh
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refresh()
        self.live.__exit__(*exc)


def cmd_logs(sweep: Sweep, args: argparse.Namespace) -> int:
    return logs(sweep, args.runs_root, args.run_id, follow=args.follow, tail=args.tail, interval=args.interval)


def cmd_rehearse(sweep: Sweep, args: argparse.Namespace) -> int:
    from launcher.rehearse import rehearse

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: rehearse at least one run", hint="For example: --limit 2.")
    if args.run:
        known = {r.run_id for r in sweep.runs}
        unknown = [r for r in args.run if r not in known]
        if unknown:
            raise ConfigError(f"{sweep.path}: no run {unknown[0]} in this sweep",
                              hint=f"For example: --run {sweep.runs[0].run_id} (python -m launcher plan lists them).")
        sweep.runs = [r for r in sweep.runs if r.run_id in args.run]
    cluster = {k: getattr(args, k) for k in ("partition", "account", "qos") if getattr(args, k) is not None}
    if cluster and args.backend != "slurm":
        flag = next(iter(cluster))
        raise ConfigError(f"--{flag} applies to a rehearsal on SLURM only", hint="Add --backend slurm.")
    return rehearse(sweep, args.runs_root, limit=args.limit, timeout_s=args.timeout, backend=args.backend,
                    slurm=cluster)


COMMANDS = {"plan": cmd_plan, "prepare": cmd_prepare, "submit": cmd_submit, "status": cmd_status, "pull": cmd_pull, "report": cmd_report,
            "cancel": cmd_cancel, "logs": cmd_logs, "rehearse": cmd_rehearse}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launcher", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        s = sub.add_parser(name)
        s.add_argument("sweep", type=Path, help="sweep YAML (sweeps/*.yaml)")
        s.add_argument("--runs-root", type=Path, default=Path("runs-rehearsal" if name == "rehearse" else "runs"),
                       help="runs go to RUNS_ROOT/<sweep>/<run-id>")
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a run-config value in every run (repeatable)")
        s.add_argument("--yes", action="store_true",
                       help=f"accept a sweep of more than {MAX_RUNS} runs (refused otherwise, with its count)")
        if name in ("plan", "submit"):
            s.add_argument("--backend", default="local", choices=BACKENDS)
        if name == "submit":
            s.add_argument("--allow-stale-image", action="store_true",
                           help="submit even if the image was built from another git revision than HEAD")
            wait = s.add_mutually_exclusive_group()
            wait.add_argument("--wait", action="store_true",
                              help="SLURM/Beaker: keep the live view until every run has ended (Ctrl-C: stop "
                              "watching, the jobs keep running); exit 1 when a run did not complete")
            wait.add_argument("--no-wait", dest="wait", action="store_false",
                              help="return once submitted, printing the next command (the default)")
            s.add_argument("--interval", type=float, default=5.0, help="--wait: seconds between refreshes")
        if name == "plan":
            s.add_argument("--render", action="store_true", help="print the exact artifacts each run would submit")
        if name == "status":
            s.add_argument("--strict", action="store_true", help="exit 1 if a run failed or was lost")
        if name == "rehearse":
            s.add_argument("--backend", default="local", choices=("local", "slurm"),
                           help="local: every rank on this machine; slurm: submitted to the cluster, preempted by USR2")
            s.add_argument("--limit", type=int, default=None, metavar="N", help="rehearse the first N runs only")
            s.add_argument("--run", action="append", default=[], metavar="RUN_ID", help="rehearse this run (repeatable)")
            s.add_argument("--timeout", type=float, default=900, help="seconds each attempt of a run may take")
            for flag in ("partition", "account", "qos"):
                s.add_argument(f"--{flag}", default=None,
                               help=f"--backend slurm: submit to this {flag} instead of the sweep's "
                               f"backend.slurm.{flag} (rehearse on a cluster other than the sweep's)")
        if name == "logs":
            s.add_argument("run_id", nargs="?", default=None, help="a run id (or a unique prefix); none: a summary")
            s.add_argument("--follow", "-f", action="store_true", help="keep following (Ctrl-C stops; the job runs on)")
            s.add_argument("--tail", type=int, default=100, help="last N lines (-1: all)")
            s.add_argument("--interval", type=float, default=5.0, help="seconds between summary refreshes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sweep = load_sweep(args.sweep, args.overrides, max_runs=None if args.yes else MAX_RUNS)
    return COMMANDS[args.command](sweep, args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
