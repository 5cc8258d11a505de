"""The worker registry: every training worker (its Celery main process) registers, heartbeats and, on a clean
shutdown, marks itself stopped. A worker is ALIVE while it is not stopped and was seen within the job lease
(HEADWISE_JOB_LEASE_SECONDS): the same horizon after which the reaper takes its running job back. Timestamps
come from the database's clock (db_clock), like job heartbeats. A job's `worker` column holds the id of the
worker that claimed it, so "current job" is a join, not a second write."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.db.base import db_clock, db_now
from service.db.tables import Job, Worker
from service.domain import JobStatus


def register(*, session: Session, worker_id: str, host: str, pid: int, queues: list[str], device: str,
             memory_budget: int | None = None, memory_used: int | None = None) -> None:
    now = db_clock(session)
    session.add(Worker(id=worker_id, host=host, pid=pid, queues=queues, device=device, started_at=now,
                       last_seen_at=now, stopped_at=None, memory_budget_bytes=memory_budget,
                       memory_used_bytes=memory_used))
    session.flush()


def beat(*, session: Session, worker_id: str, memory_used: int | None = None) -> bool:
    """last_seen = now (and the memory in use); False when the row is gone or marked stopped (the caller
    registers again)."""
    values: dict[str, Any] = {"last_seen_at": db_clock(session)}
    if memory_used is not None:
        values["memory_used_bytes"] = memory_used
    result = session.execute(update(Worker).where(Worker.id == worker_id, Worker.stopped_at.is_(None))
                             .values(**values))
    return result.rowcount == 1


def budget(*, session: Session, worker_id: str) -> int | None:
    """The memory budget a worker reported (None: unknown, e.g. a worker older than the report)."""
    return session.execute(select(Worker.memory_budget_bytes).where(Worker.id == worker_id)).scalar_one_or_none()


def alive_budgets(*, session: Session, lease_seconds: float) -> list[int | None]:
    """The memory budgets of the live workers (None where a worker did not report one)."""
    since = alive_since(session=session, lease_seconds=lease_seconds)
    return list(session.scalars(select(Worker.memory_budget_bytes)
                                .where(Worker.stopped_at.is_(None), Worker.last_seen_at >= since)))


def budgets_fit(*, session: Session, lease_seconds: float, peak: int) -> dict[str, Any]:
    """For the audit: how many live workers could take a job of `peak` bytes, and their budgets."""
    budgets = alive_budgets(session=session, lease_seconds=lease_seconds)
    return {"alive": len(budgets), "fit": sum(b is None or b >= peak for b in budgets),
            "budgets_bytes": sorted(b for b in budgets if b is not None)}


def mark_stopped(*, session: Session, worker_id: str) -> None:
    now = db_clock(session)
    session.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=now, last_seen_at=now))


def alive_since(*, session: Session, lease_seconds: float) -> datetime:
    """Workers seen after this instant (database clock) are alive."""
    return db_now(session=session) - timedelta(seconds=lease_seconds)


def count_alive(*, session: Session, lease_seconds: float) -> int:
    since = alive_since(session=session, lease_seconds=lease_seconds)
    return session.execute(select(func.count()).select_from(Worker)
                           .where(Worker.stopped_at.is_(None), Worker.last_seen_at >= since)).scalar_one()


def list_workers(*, session: Session, lease_seconds: float, limit: int = 200) -> list[dict[str, Any]]:
    """Every registered worker, newest first, with `alive` and the job it runs now (id and team), if any."""
    since = alive_since(session=session, lease_seconds=lease_seconds)
    rows = list(session.scalars(select(Worker).order_by(Worker.started_at.desc(), Worker.id).limit(limit)))
    running = {w: (job_id, team) for w, job_id, team in session.execute(
        select(Job.worker, Job.id, Job.team).where(Job.status == JobStatus.RUNNING, Job.worker.in_([r.id for r in rows]))
    ).all()} if rows else {}
    return [{"id": r.id, "host": r.host, "pid": r.pid, "queues": list(r.queues or []), "device": r.device,
             "memory_budget_bytes": r.memory_budget_bytes, "memory_used_bytes": r.memory_used_bytes,
             "current_job": running.get(r.id, (None, None))[0], "current_job_team": running.get(r.id, (None, None))[1],
             "started_at": r.started_at, "last_seen_at": r.last_seen_at,
             "stopped_at": r.stopped_at, "alive": r.stopped_at is None and _aware(r.last_seen_at) >= _aware(since)}
            for r in rows]


def is_alive(*, session: Session, worker_id: str | None, lease_seconds: float) -> bool:
    if not worker_id:
        return False
    since = alive_since(session=session, lease_seconds=lease_seconds)
    return session.execute(select(func.count()).select_from(Worker).where(
        Worker.id == worker_id, Worker.stopped_at.is_(None), Worker.last_seen_at >= since)).scalar_one() == 1


def prune(*, session: Session, older_than_seconds: float) -> int:
    """Forget workers not seen for a long time (they are listed as dead until then)."""
    before = db_now(session=session) - timedelta(seconds=older_than_seconds)
    return session.execute(delete(Worker).where(Worker.last_seen_at < before)).rowcount or 0


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored as UTC)."""
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
