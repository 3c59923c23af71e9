"""A Beaker workload's jobs: which job is the current attempt (a preempted job, then the one that resumed it; the
replicas of a multi-node task), its state as a launcher state, and its logs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Protocol

from beaker import BeakerCancelationCode, BeakerJob, BeakerJobLog, BeakerWorkloadStatus

from launcher.backends.base import JobState, LogTarget, NotStartedError
from launcher.tail import Out
from trainer.rundir import EXIT_PREEMPTED

_PREEMPTION_CODES = {
    BeakerCancelationCode.system_preemption,
    BeakerCancelationCode.user_preemption,
    BeakerCancelationCode.sibling_task_preemption,
    BeakerCancelationCode.node_unavailable,
}
_PENDING = {BeakerWorkloadStatus.submitted, BeakerWorkloadStatus.queued, BeakerWorkloadStatus.ready_to_start}
_RUNNING = {BeakerWorkloadStatus.initializing, BeakerWorkloadStatus.running, BeakerWorkloadStatus.stopping,
            BeakerWorkloadStatus.uploading_results}


class LogClient(Protocol):
    """What following a workload's logs asks of the Beaker client."""

    def list_jobs(self, workload_id: str) -> list[BeakerJob]: ...

    def logs(self, job: BeakerJob, follow: bool = False, tail_lines: int | None = None) -> Iterable[BeakerJobLog]: ...


def current_attempt(jobs: Sequence[BeakerJob]) -> list[BeakerJob]:
    """The newest job (jobs are oldest first) and, for a multi-node task, the other replicas of its group."""
    if not jobs:
        return []
    newest = jobs[-1]
    group = newest.system_details.replica_group_details.id
    if not group:
        return [newest]
    return [j for j in jobs if j.system_details.replica_group_details.id == group]


def leader(attempt: Sequence[BeakerJob]) -> BeakerJob | None:
    if not attempt:
        return None
    for j in attempt:
        if j.system_details.replica_group_details.is_leader_replica:
            return j
    return min(attempt, key=lambda j: j.system_details.replica_group_details.rank)


def job_state(job: BeakerJob) -> JobState:
    """One beaker-py job (protobuf `Job`) as a launcher state."""
    st = job.status
    finalized = st.HasField("finalized") or st.status in (
        BeakerWorkloadStatus.succeeded, BeakerWorkloadStatus.failed, BeakerWorkloadStatus.canceled)
    if not finalized:
        if st.status in _RUNNING:
            return "running"
        if st.status in _PENDING:
            return "pending"
        return "running" if st.HasField("started") else "pending"
    if st.HasField("canceled_code") and st.canceled_code:
        code = BeakerCancelationCode(st.canceled_code)
        if code in _PREEMPTION_CODES:
            return "preempted"
        if code == BeakerCancelationCode.manual:
            return "cancelled"
        if code == BeakerCancelationCode.sibling_task_retry:
            return "pending"
        if st.HasField("exit_code") and st.exit_code == EXIT_PREEMPTED:
            return "preempted"
        return "failed"
    if st.HasField("exit_code") and st.exit_code == EXIT_PREEMPTED:
        return "preempted"  # the trainer saved its state on SIGTERM and asks to be run again
    if st.status == BeakerWorkloadStatus.succeeded or (st.HasField("exit_code") and st.exit_code == 0
                                                       and not st.HasField("failed")):
        return "completed"
    if st.status == BeakerWorkloadStatus.canceled or st.HasField("canceled"):
        return "cancelled"
    return "failed"


def attempt_state(attempt: Sequence[BeakerJob]) -> JobState:
    """All replicas of one attempt: any failure fails it; it completes only when every replica did."""
    if not attempt:
        return "pending"  # experiment created, no job scheduled yet
    states = {job_state(j) for j in attempt}
    for s in ("failed", "preempted", "cancelled", "running", "pending", "unknown"):
        if s in states:
            return s
    return "completed"


def attempt_ids(jobs: Sequence[BeakerJob]) -> list[str]:
    """One id per attempt (the leader's, or the job's own id on one node), oldest first."""
    seen: dict[str, str] = {}
    for j in jobs:
        group = j.system_details.replica_group_details.id or j.id
        if group not in seen or j.system_details.replica_group_details.is_leader_replica:
            seen[group] = j.id
    return list(seen.values())


def log_lines(logs: Iterable[Any]) -> Iterator[str]:
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


def logs(client: LogClient, t: LogTarget, follow: bool, tail: int | None, stream: IO[str]) -> int:
    """The logs of the newest job of the run's workload, after a line per earlier job; following, a job that takes
    over (a retry, a resumption after a preemption) is followed too."""
    if not t.jobs:
        raise NotStartedError(f"run {t.run.run_id}: no Beaker experiment in {t.manifest_path}")
    out = Out(stream)
    workload_id = t.jobs[-1].job_id
    shown: set[str] = set()
    first = True
    while True:
        jobs = client.list_jobs(workload_id)
        newest = leader(current_attempt(jobs))
        if first:
            line = f"# beaker workload {workload_id} of run {t.run.run_id}: {len(attempt_ids(jobs))} job(s)"
            out.line(line + (f"; showing the newest, {newest.id} ({job_state(newest)})" if newest else ""))
            for k, jid in enumerate(attempt_ids(jobs)[:-1], 1):
                j = next(x for x in jobs if x.id == jid)
                out.line(f"# --- restart {k}: job {jid} ended {job_state(j)}; the next job took over")
            first = False
        if newest is None:
            out.line("# no job scheduled yet")
            if not follow:
                return 0
            time.sleep(5)
            continue
        if newest.id in shown:
            return 0
        shown.add(newest.id)
        if len(shown) > 1:
            out.line(f"# --- restart: a newer job {newest.id} took over ({len(attempt_ids(jobs))} jobs in all)")
        for text in log_lines(client.logs(newest, follow=follow, tail_lines=tail)):
            out.line(text)
        if not follow:
            return 0
        # the job ended: a retry of a preempted job may have started meanwhile
        after = leader(current_attempt(client.list_jobs(workload_id)))
        if after is None or after.id in shown:
            return 0
