"""Jobs that run a registered model version instead of training one: batch predictions (kind "batch_predict") and
evaluations (kind "evaluate"). Claim, lease, reaper and cancel are those of service/db/jobs.py; the version is in
params.model_version_id / params.version."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Job

BATCH_PREDICT = "batch_predict"
EVALUATE = "evaluate"


def get(*, session: Session, kind: str, team: str, model_name: str, job_id: str) -> Job | None:
    stmt = select(Job).where(Job.id == job_id, Job.team == team, Job.kind == kind, Job.model_name == model_name)
    return session.scalars(stmt).first()


def list_for_model(*, session: Session, kind: str, team: str, model_name: str, version: int | None = None,
                   limit: int = 100) -> list[Job]:
    """Newest first; with `version`, only those of that version number."""
    stmt = (select(Job).where(Job.team == team, Job.kind == kind, Job.model_name == model_name)
            .order_by(Job.created_at.desc(), Job.id))
    jobs = list(session.scalars(stmt.limit(limit if version is None else 10 * limit)))
    if version is not None:  # params is JSON: filtered here, portable across SQLite and PostgreSQL
        jobs = [j for j in jobs if (j.params or {}).get("version") == version][:limit]
    return jobs
