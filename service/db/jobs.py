"""Jobs: the job row is the truth and the broker a doorbell.

Every transition is a conditional UPDATE whose rowcount says whether this caller won. A running job is fenced
by its attempt number: only the worker holding attempt N may heartbeat, write progress or finish it, so a
worker that lost its lease (reaped, requeued) can no longer touch the row. Functions take a keyword-only
`session`; they flush, never commit (true of every module in service/db)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, true, update
from sqlalchemy.orm import Session

from service.db.base import db_clock
from service.db.tables import Job
from service.domain import ACTIVE_STATUSES, JobStatus


def progress_of(job: Job) -> dict[str, Any]:
    """The job's progress as stored; before the first epoch, "epochs" is the spec's number of epochs (None for
    "auto", which the worker plans when training starts)."""
    progress = dict(job.progress or {})
    if progress.get("epochs") is None:
        planned = ((job.spec or {}).get("training") or {}).get("epochs")
        progress["epochs"] = planned if isinstance(planned, int) and not isinstance(planned, bool) else None
    return progress


def get_team_job(*, session: Session, job_id: str, team: str) -> Job | None:
    return session.scalars(select(Job).where(Job.id == job_id, Job.team == team)).first()


def list_team_jobs(
    *, session: Session, team: str, status: str | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    conds = [Job.team == team] + ([Job.status == status] if status else [])
    total = session.scalar(select(func.count()).select_from(Job).where(*conds)) or 0
    stmt = select(Job).where(*conds).order_by(Job.created_at.desc(), Job.id)
    return list(session.scalars(stmt.limit(limit).offset(offset))), total


def cancel_queued_job(*, session: Session, job_id: str, when: datetime) -> bool:
    """queued -> cancelled at once (atomic: loses to a worker that claimed it first)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=when, error="cancelled before start")
    )
    return result.rowcount == 1


def request_job_cancel(*, session: Session, job_id: str) -> bool:
    """running -> cancel_requested (the worker stops at its next check and ends the job cancelled)."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING).values(cancel_requested=True)
    )
    return result.rowcount == 1


def create_job(
    *, session: Session, team: str, dataset_id: str | None, model_name: str, spec: dict[str, Any],
    kind: str = "train", params: dict[str, Any] | None = None, warnings: list[dict[str, Any]] | None = None,
    memory_bytes: int | None = None,
) -> Job:
    job = Job(team=team, dataset_id=dataset_id, model_name=model_name, spec=spec, status=JobStatus.QUEUED,
              progress={}, history=[], metrics={}, cancel_requested=False, attempts=0, kind=kind, params=params,
              warnings=warnings, memory_bytes=memory_bytes)
    session.add(job)
    session.flush()
    return job


def claim_job(*, session: Session, job_id: str, worker: str) -> Job | None:
    """queued -> running atomically (attempts += 1); None when the job is not claimable (a second delivery of
    a running/finished job, an unknown id, or a queued job whose cancel was requested: that one ends cancelled)."""
    now = db_clock(session)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(True))
        .values(status=JobStatus.CANCELLED, finished_at=now)
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
        .values(status=JobStatus.RUNNING, attempts=Job.attempts + 1, worker=worker, heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, now), error=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    session.flush()
    return session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one()


def fits(budget: int | None):
    """The jobs a worker with this memory budget may claim (no budget: every job)."""
    if budget is None:
        return true()
    return or_(Job.memory_bytes.is_(None), Job.memory_bytes <= budget)


def next_fair_job(*, session: Session, budget: int | None = None) -> str | None:
    """The queued job to run next, fair across teams: the team served least recently first (a team never served
    before comes first; "served" = the latest start of any of its jobs), then that team's oldest job. Only jobs
    whose estimated peak memory fits `budget` (the claiming worker's)."""
    served = (
        select(Job.team.label("team"), func.max(Job.started_at).label("served"))
        .where(Job.started_at.is_not(None)).group_by(Job.team).subquery()
    )
    stmt = (
        select(Job.id).outerjoin(served, served.c.team == Job.team)
        .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False), fits(budget))
        .order_by(served.c.served.is_not(None), served.c.served, Job.created_at, Job.id).limit(1)
    )
    return session.execute(stmt).scalar_one_or_none()


def claim_next_job(*, session: Session, delivered: str, worker: str, tries: int = 5,
                   budget: int | None = None) -> Job | None:
    """A delivery is a doorbell: claim the fairest queued job (next_fair_job) that fits the worker's memory
    `budget`, not necessarily the delivered one. Every queued job has one message, so every job still gets claimed
    once. A delivered job whose cancel was requested ends cancelled here. None when nothing is claimable."""
    session.execute(
        update(Job).where(Job.id == delivered, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(True))
        .values(status=JobStatus.CANCELLED, finished_at=db_clock(session))
    )
    for _ in range(tries):  # another worker may win the candidate between the pick and the claim
        job_id = next_fair_job(session=session, budget=budget)
        if job_id is None:
            return None
        job = claim_job(session=session, job_id=job_id, worker=worker)
        if job is not None:
            return job
    return None


def job_memory(*, session: Session, job_id: str) -> int | None:
    """A job's estimated peak memory (bytes) as stored at creation."""
    return session.execute(select(Job.memory_bytes).where(Job.id == job_id)).scalar_one_or_none()


def count_team_active_jobs(*, session: Session, team: str) -> int:
    """Queued + running jobs of a team (the TEAM_MAX_ACTIVE_JOBS quota)."""
    return session.execute(
        select(func.count()).select_from(Job).where(Job.team == team, Job.status.in_(sorted(ACTIVE_STATUSES)))
    ).scalar_one()


def lock_team(*, session: Session, team: str) -> None:
    """Serialise quota checks of one team until the transaction ends (PostgreSQL: a transaction-level advisory
    lock; SQLite: its single-writer lock already does, once the transaction writes)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext("headwise:team:" + team))))


def owned(job_id: str, attempt: int) -> tuple:
    return (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == attempt)


def heartbeat(*, session: Session, job_id: str, attempt: int) -> bool:
    """Extend the lease; False when this attempt no longer owns the job."""
    result = session.execute(update(Job).where(*owned(job_id, attempt)).values(heartbeat_at=db_clock(session)))
    return result.rowcount == 1


def write_progress(
    *, session: Session, job_id: str, attempt: int, progress: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
) -> bool:
    """Progress and (when given) history; also a heartbeat. False when this attempt no longer owns the job."""
    values: dict[str, Any] = {"progress": progress, "heartbeat_at": db_clock(session)}
    if history is not None:
        values["history"] = history
    result = session.execute(update(Job).where(*owned(job_id, attempt)).values(**values))
    return result.rowcount == 1


def write_params(*, session: Session, job_id: str, attempt: int, params: dict[str, Any]) -> bool:
    """Replace a running job's params (a comparison's finished sub-runs); also a heartbeat. False when this
    attempt no longer owns the job."""
    result = session.execute(update(Job).where(*owned(job_id, attempt))
                             .values(params=params, heartbeat_at=db_clock(session)))
    return result.rowcount == 1


def is_cancel_requested(*, session: Session, job_id: str) -> bool:
    flag = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
    return bool(flag)


def job_status(*, session: Session, job_id: str) -> str | None:
    return session.execute(select(Job.status).where(Job.id == job_id)).scalar_one_or_none()


def finish_failed(
    *, session: Session, job_id: str, error: str, attempt: int | None = None, stale_before: datetime | None = None
) -> bool:
    """running (or queued) -> failed. With attempt: only if that attempt still owns the job. With
    stale_before: only if the job's heartbeat is older (the reaper's condition)."""
    return _finish(session, job_id, JobStatus.FAILED, error, attempt, stale_before)


def finish_done(
    *, session: Session, job_id: str, attempt: int, metrics: dict[str, Any], progress: dict[str, Any]
) -> bool:
    """running -> succeeded for a job that registers no model version (batch prediction), if `attempt` still owns
    it. (Training jobs finish through registry.finish_succeeded, which also creates the version.)"""
    result = session.execute(update(Job).where(*owned(job_id, attempt)).values(
        status=JobStatus.SUCCEEDED, metrics=metrics, progress=progress, error=None, finished_at=db_clock(session)))
    return result.rowcount == 1


def finish_cancelled(*, session: Session, job_id: str, attempt: int | None = None) -> bool:
    return _finish(session, job_id, JobStatus.CANCELLED, None, attempt, None)


def _finish(
    session: Session, job_id: str, status: str, error: str | None, attempt: int | None,
    stale_before: datetime | None,
) -> bool:
    now = db_clock(session)
    if attempt is not None:
        conditions = list(owned(job_id, attempt))
    else:
        conditions = [Job.id == job_id, Job.status.in_(sorted(ACTIVE_STATUSES))]
    if stale_before is not None:
        conditions.append(func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at) < stale_before)
    result = session.execute(
        update(Job).where(*conditions).values(status=status, error=error, finished_at=now)
    )
    return result.rowcount == 1


def stale_running_jobs(*, session: Session, stale_before: datetime, limit: int = 100) -> list[tuple[str, int]]:
    """(job id, attempts) of running jobs whose lease (heartbeat) expired before stale_before."""
    rows = session.execute(
        select(Job.id, Job.attempts)
        .where(Job.status == JobStatus.RUNNING,
               func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at) < stale_before)
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    return [(row[0], row[1]) for row in rows]


def requeue_job(*, session: Session, job_id: str, attempt: int, stale_before: datetime) -> bool:
    """running -> queued for a job whose worker vanished (same attempt, heartbeat still stale); the caller
    enqueues it again after the commit. Progress and history stay: the next attempt resumes from the last
    checkpoint."""
    result = session.execute(
        update(Job)
        .where(*owned(job_id, attempt),
               func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at) < stale_before)
        .values(status=JobStatus.QUEUED, worker=None, heartbeat_at=None, enqueued_at=db_clock(session))
    )
    return result.rowcount == 1


def release_job(*, session: Session, job_id: str, attempt: int) -> bool:
    """running -> queued by the worker holding `attempt` when the attempt failed in a way the next one can
    recover from (a training process died); the caller enqueues it again after the commit."""
    result = session.execute(
        update(Job)
        .where(*owned(job_id, attempt))
        .values(status=JobStatus.QUEUED, worker=None, heartbeat_at=None, enqueued_at=db_clock(session))
    )
    return result.rowcount == 1


def count_queued_jobs(*, session: Session) -> int:
    """Jobs waiting to be claimed (queued, not cancelled): each should have a message in the broker."""
    return session.execute(
        select(func.count()).select_from(Job).where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
    ).scalar_one()


def stale_queued_jobs(*, session: Session, rung_before: datetime, limit: int = 100) -> list[str]:
    """Queued jobs whose last enqueue (enqueued_at, else created_at) is older than rung_before."""
    return list(session.execute(
        select(Job.id)
        .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False),
               func.coalesce(Job.enqueued_at, Job.created_at) < rung_before)
        .order_by(Job.created_at).limit(limit)
    ).scalars())


def ring_queued_job(*, session: Session, job_id: str, rung_before: datetime) -> bool:
    """Record a new enqueue of a still-queued job (conditional: one of several reapers wins)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED,
               func.coalesce(Job.enqueued_at, Job.created_at) < rung_before)
        .values(enqueued_at=db_clock(session))
    )
    return result.rowcount == 1


def count_jobs_by_status(*, session: Session) -> dict[str, int]:
    """{status: number of jobs}, every team (Prometheus /metrics)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: int(n) for status, n in rows}


def running_jobs_history(*, session: Session, limit: int = 100) -> list[tuple[str, str, list]]:
    """(job id, model name, history) of running jobs, oldest first (training images/s on /metrics)."""
    rows = session.execute(
        select(Job.id, Job.model_name, Job.history).where(Job.status == JobStatus.RUNNING).order_by(Job.created_at).limit(limit)
    ).all()
    return [(row[0], row[1], row[2] or []) for row in rows]
