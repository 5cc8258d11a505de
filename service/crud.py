"""Every SQL statement lives here. Functions take a keyword-only `session`; they flush, never commit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from service.models import Job, ModelVersion, RegisteredModel, new_id, utcnow

# ---- keys, datasets, registry reads (owner: service-web) -------------------------------------------
# Team scoping: every web read takes `team` and returns None for another team's row (the API answers 404).
ACTIVE_JOB_STATUSES = ("queued", "running")

from datetime import datetime as _dt  # noqa: E402
from typing import Any as _Any  # noqa: E402

import sqlalchemy as _sa  # noqa: E402
from sqlalchemy.orm import Session as _Session  # noqa: E402

from service import models as _m  # noqa: E402


def ping(*, session: _Session) -> None:
    session.execute(_sa.text("SELECT 1"))


def insert_api_key(
    *, session: _Session, name: str, team: str, scopes: list[str], prefix: str, key_hash: str
) -> _m.ApiKey:
    row = _m.ApiKey(name=name, team=team, scopes=list(scopes), prefix=prefix, key_hash=key_hash)
    session.add(row)
    session.flush()
    return row


def get_api_key_by_prefix(*, session: _Session, prefix: str) -> _m.ApiKey | None:
    return session.scalars(_sa.select(_m.ApiKey).where(_m.ApiKey.prefix == prefix)).first()


def get_api_key(*, session: _Session, key_id: str, team: str | None = None) -> _m.ApiKey | None:
    stmt = _sa.select(_m.ApiKey).where(_m.ApiKey.id == key_id)
    if team is not None:
        stmt = stmt.where(_m.ApiKey.team == team)
    return session.scalars(stmt).first()


def find_api_keys(*, session: _Session, id_or_prefix: str) -> list[_m.ApiKey]:
    """Keys whose id equals, or whose prefix starts with, the given text (CLI revoke)."""
    stmt = _sa.select(_m.ApiKey).where(
        _sa.or_(_m.ApiKey.id == id_or_prefix, _m.ApiKey.prefix.startswith(id_or_prefix, autoescape=True))
    )
    return list(session.scalars(stmt))


def list_api_keys(*, session: _Session, team: str | None = None) -> list[_m.ApiKey]:
    stmt = _sa.select(_m.ApiKey).order_by(_m.ApiKey.created_at, _m.ApiKey.id)
    if team is not None:
        stmt = stmt.where(_m.ApiKey.team == team)
    return list(session.scalars(stmt))


def count_api_keys(*, session: _Session) -> int:
    return session.scalar(_sa.select(_sa.func.count()).select_from(_m.ApiKey)) or 0


def revoke_api_key(*, session: _Session, key: _m.ApiKey, when: _dt) -> _m.ApiKey:
    if key.revoked_at is None:
        key.revoked_at = when
        session.flush()
    return key


def touch_api_key(*, session: _Session, key_id: str, when: _dt) -> None:
    session.execute(_sa.update(_m.ApiKey).where(_m.ApiKey.id == key_id).values(last_used_at=when))


def insert_dataset(*, session: _Session, **fields: _Any) -> _m.Dataset:
    row = _m.Dataset(**fields)
    session.add(row)
    session.flush()
    return row


def get_dataset(*, session: _Session, dataset_id: str, team: str) -> _m.Dataset | None:
    stmt = _sa.select(_m.Dataset).where(_m.Dataset.id == dataset_id, _m.Dataset.team == team)
    return session.scalars(stmt).first()


def list_datasets(*, session: _Session, team: str, limit: int, offset: int) -> tuple[list[_m.Dataset], int]:
    where = _m.Dataset.team == team
    total = session.scalar(_sa.select(_sa.func.count()).select_from(_m.Dataset).where(where)) or 0
    stmt = _sa.select(_m.Dataset).where(where).order_by(_m.Dataset.created_at.desc(), _m.Dataset.id)
    return list(session.scalars(stmt.limit(limit).offset(offset))), total


def dataset_active_jobs(*, session: _Session, dataset_id: str) -> list[str]:
    stmt = _sa.select(_m.Job.id).where(
        _m.Job.dataset_id == dataset_id, _m.Job.status.in_(ACTIVE_JOB_STATUSES)
    )
    return list(session.scalars(stmt))


def delete_dataset(*, session: _Session, dataset_id: str) -> None:
    # jobs.dataset_id / model_versions.dataset_id are ON DELETE SET NULL; do it explicitly as well so the
    # result does not depend on the database enforcing foreign keys.
    session.execute(_sa.update(_m.Job).where(_m.Job.dataset_id == dataset_id).values(dataset_id=None))
    session.execute(
        _sa.update(_m.ModelVersion).where(_m.ModelVersion.dataset_id == dataset_id).values(dataset_id=None)
    )
    session.execute(_sa.delete(_m.Dataset).where(_m.Dataset.id == dataset_id))


def get_team_job(*, session: _Session, job_id: str, team: str) -> _m.Job | None:
    return session.scalars(_sa.select(_m.Job).where(_m.Job.id == job_id, _m.Job.team == team)).first()


def list_team_jobs(
    *, session: _Session, team: str, status: str | None, limit: int, offset: int
) -> tuple[list[_m.Job], int]:
    conds = [_m.Job.team == team] + ([_m.Job.status == status] if status else [])
    total = session.scalar(_sa.select(_sa.func.count()).select_from(_m.Job).where(*conds)) or 0
    stmt = _sa.select(_m.Job).where(*conds).order_by(_m.Job.created_at.desc(), _m.Job.id)
    return list(session.scalars(stmt.limit(limit).offset(offset))), total


def cancel_queued_job(*, session: _Session, job_id: str, when: _dt) -> bool:
    """queued -> cancelled at once (atomic: loses to a worker that claimed it first)."""
    result = session.execute(
        _sa.update(_m.Job)
        .where(_m.Job.id == job_id, _m.Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=when, error="cancelled before start")
    )
    return result.rowcount == 1


def request_job_cancel(*, session: _Session, job_id: str) -> bool:
    """running -> cancel_requested (the worker stops at its next check and ends the job cancelled)."""
    result = session.execute(
        _sa.update(_m.Job).where(_m.Job.id == job_id, _m.Job.status == "running").values(cancel_requested=True)
    )
    return result.rowcount == 1


def job_versions(*, session: _Session, job_ids: list[str]) -> dict[str, tuple[str, int]]:
    """{job id: (model name, version)} for jobs that produced a model version."""
    if not job_ids:
        return {}
    stmt = (
        _sa.select(_m.ModelVersion.job_id, _m.RegisteredModel.name, _m.ModelVersion.version)
        .join(_m.RegisteredModel, _m.RegisteredModel.id == _m.ModelVersion.model_id)
        .where(_m.ModelVersion.job_id.in_(job_ids))
    )
    return {job_id: (name, version) for job_id, name, version in session.execute(stmt)}


def list_team_models(*, session: _Session, team: str) -> list[tuple[_m.RegisteredModel, _m.ModelVersion | None]]:
    """Registered models of a team, each with its latest version (None when it has none)."""
    latest = (
        _sa.select(_m.ModelVersion.model_id, _sa.func.max(_m.ModelVersion.version).label("version"))
        .group_by(_m.ModelVersion.model_id)
        .subquery()
    )
    stmt = (
        _sa.select(_m.RegisteredModel, _m.ModelVersion)
        .outerjoin(latest, latest.c.model_id == _m.RegisteredModel.id)
        .outerjoin(
            _m.ModelVersion,
            _sa.and_(_m.ModelVersion.model_id == _m.RegisteredModel.id, _m.ModelVersion.version == latest.c.version),
        )
        .where(_m.RegisteredModel.team == team)
        .order_by(_m.RegisteredModel.name)
    )
    return [(rm, mv) for rm, mv in session.execute(stmt)]


def get_team_model(*, session: _Session, team: str, name: str) -> _m.RegisteredModel | None:
    stmt = _sa.select(_m.RegisteredModel).where(_m.RegisteredModel.team == team, _m.RegisteredModel.name == name)
    return session.scalars(stmt).first()


def list_model_versions(*, session: _Session, model_id: str) -> list[_m.ModelVersion]:
    stmt = _sa.select(_m.ModelVersion).where(_m.ModelVersion.model_id == model_id).order_by(_m.ModelVersion.version)
    return list(session.scalars(stmt))


def get_model_version(*, session: _Session, model_id: str, version: int | None) -> _m.ModelVersion | None:
    """One version, or the latest when version is None."""
    stmt = _sa.select(_m.ModelVersion).where(_m.ModelVersion.model_id == model_id)
    if version is None:
        stmt = stmt.order_by(_m.ModelVersion.version.desc()).limit(1)
    else:
        stmt = stmt.where(_m.ModelVersion.version == version)
    return session.scalars(stmt).first()



# ---- job lifecycle: create/claim/progress/finish, model versions (owner: worker) ---------------------
# The job row is the truth; every transition below is a conditional UPDATE whose rowcount says whether this
# caller won. A running job is fenced by its attempt number: only the worker holding attempt N may heartbeat,
# write progress or finish it, so a worker that lost its lease (reaped, requeued) can no longer touch the row.

def _now(session: Session) -> Any:
    """Timestamps for leases come from the database's clock where it has one (PostgreSQL: workers and reapers
    on different hosts compare one clock), else from this host's (SQLite: one host)."""
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


def db_now(*, session: Session) -> datetime:
    """The clock _now() writes with, as a value (the reaper's reference for stale leases)."""
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(select(func.now())).scalar_one()
    return utcnow()


def create_job(
    *, session: Session, team: str, dataset_id: str | None, model_name: str, spec: dict[str, Any]
) -> Job:
    job = Job(team=team, dataset_id=dataset_id, model_name=model_name, spec=spec, status="queued",
              progress={}, history=[], metrics={}, cancel_requested=False, attempts=0)
    session.add(job)
    session.flush()
    return job


def claim_job(*, session: Session, job_id: str, worker: str) -> Job | None:
    """queued -> running atomically (attempts += 1); None when the job is not claimable (a second delivery of
    a running/finished job, an unknown id, or a queued job whose cancel was requested: that one ends cancelled)."""
    now = _now(session)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=now)
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
        .values(status="running", attempts=Job.attempts + 1, worker=worker, heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, now), error=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    session.flush()
    return session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one()


def _owned(job_id: str, attempt: int) -> tuple:
    return (Job.id == job_id, Job.status == "running", Job.attempts == attempt)


def heartbeat(*, session: Session, job_id: str, attempt: int) -> bool:
    """Extend the lease; False when this attempt no longer owns the job."""
    result = session.execute(update(Job).where(*_owned(job_id, attempt)).values(heartbeat_at=_now(session)))
    return result.rowcount == 1


def write_progress(
    *, session: Session, job_id: str, attempt: int, progress: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
) -> bool:
    """Progress and (when given) history; also a heartbeat. False when this attempt no longer owns the job."""
    values: dict[str, Any] = {"progress": progress, "heartbeat_at": _now(session)}
    if history is not None:
        values["history"] = history
    result = session.execute(update(Job).where(*_owned(job_id, attempt)).values(**values))
    return result.rowcount == 1


def is_cancel_requested(*, session: Session, job_id: str) -> bool:
    flag = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
    return bool(flag)


def job_status(*, session: Session, job_id: str) -> str | None:
    return session.execute(select(Job.status).where(Job.id == job_id)).scalar_one_or_none()


def finish_succeeded(
    *,
    session: Session,
    job_id: str,
    attempt: int,
    spec: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    checksums: dict[str, str],
    artifact_path: Callable[[str, int], str],
    progress: dict[str, Any] | None = None,
) -> ModelVersion | None:
    """Mark the job succeeded and register the next version of its model, in the caller's transaction.

    Version numbers are allocated under a lock on the registered-model row (PostgreSQL: SELECT ... FOR
    UPDATE; SQLite: the database write lock taken by the first UPDATE), so two jobs finishing together get
    consecutive versions. artifact_path(model_id, version) -> path (relative to DATA_DIR) to record.
    Returns None (nothing written) when this attempt no longer owns the job."""
    now = _now(session)
    won = session.execute(
        update(Job).where(*_owned(job_id, attempt))
        .values(status="succeeded", finished_at=now, heartbeat_at=now, metrics=metrics, history=history,
                error=None, **({"progress": progress} if progress is not None else {}))
    )
    if won.rowcount != 1:
        return None
    job = session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one()
    model = _lock_registered_model(session=session, team=job.team, name=job.model_name)
    latest = session.execute(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    ).scalar_one()
    version_number = (latest or 0) + 1
    version = ModelVersion(
        model_id=model.id, version=version_number, job_id=job.id, dataset_id=job.dataset_id, spec=spec,
        metrics=metrics, artifact_path=artifact_path(model.id, version_number), checksums=checksums,
    )
    session.add(version)
    session.flush()
    return version


def _lock_registered_model(*, session: Session, team: str, name: str) -> RegisteredModel:
    """Get or create (team, name) and lock its row for the rest of the transaction."""
    dialect = session.get_bind().dialect.name
    values = {"id": new_id(), "team": team, "name": name, "created_at": utcnow()}
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        session.execute(
            dialect_insert(RegisteredModel).values(**values)
            .on_conflict_do_nothing(index_elements=["team", "name"])
        )
    else:  # other backends: plain get-or-create; a racing insert surfaces as IntegrityError (caller retries)
        exists = session.execute(
            select(RegisteredModel.id).where(RegisteredModel.team == team, RegisteredModel.name == name)
        ).scalar_one_or_none()
        if exists is None:
            session.execute(insert(RegisteredModel).values(**values))
    return session.execute(
        select(RegisteredModel)
        .where(RegisteredModel.team == team, RegisteredModel.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def finish_failed(
    *, session: Session, job_id: str, error: str, attempt: int | None = None, stale_before: datetime | None = None
) -> bool:
    """running (or queued) -> failed. With attempt: only if that attempt still owns the job. With
    stale_before: only if the job's heartbeat is older (the reaper's condition)."""
    return _finish(session, job_id, "failed", error, attempt, stale_before)


def finish_cancelled(*, session: Session, job_id: str, attempt: int | None = None) -> bool:
    return _finish(session, job_id, "cancelled", None, attempt, None)


def _finish(
    session: Session, job_id: str, status: str, error: str | None, attempt: int | None,
    stale_before: datetime | None,
) -> bool:
    now = _now(session)
    if attempt is not None:
        conditions = list(_owned(job_id, attempt))
    else:
        conditions = [Job.id == job_id, Job.status.in_(("queued", "running"))]
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
        .where(Job.status == "running",
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
        .where(*_owned(job_id, attempt),
               func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at) < stale_before)
        .values(status="queued", worker=None, heartbeat_at=_now(session))
    )
    return result.rowcount == 1


def count_queued_jobs(*, session: Session) -> int:
    """Jobs waiting to be claimed (queued, not cancelled): each should have a message in the broker."""
    return session.execute(
        select(func.count()).select_from(Job).where(Job.status == "queued", Job.cancel_requested.is_(False))
    ).scalar_one()


def stale_queued_jobs(*, session: Session, rung_before: datetime, limit: int = 100) -> list[str]:
    """Queued jobs whose last enqueue (heartbeat_at of a queued job, else created_at) is older than rung_before."""
    return list(session.execute(
        select(Job.id)
        .where(Job.status == "queued", Job.cancel_requested.is_(False),
               func.coalesce(Job.heartbeat_at, Job.created_at) < rung_before)
        .order_by(Job.created_at).limit(limit)
    ).scalars())


def ring_queued_job(*, session: Session, job_id: str, rung_before: datetime) -> bool:
    """Record a new enqueue of a still-queued job (conditional: one of several reapers wins)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", func.coalesce(Job.heartbeat_at, Job.created_at) < rung_before)
        .values(heartbeat_at=_now(session))
    )
    return result.rowcount == 1


# ---- metrics reads (issue 5) ------------------------------------------------------------------------------
def count_jobs_by_status(*, session: Session) -> dict[str, int]:  # (issue 5)
    """{status: number of jobs}, every team (Prometheus /metrics)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: int(n) for status, n in rows}


def running_jobs_history(*, session: Session, limit: int = 100) -> list[tuple[str, str, list]]:  # (issue 5)
    """(job id, model name, history) of running jobs, oldest first (training images/s on /metrics)."""
    rows = session.execute(
        select(Job.id, Job.model_name, Job.history).where(Job.status == "running").order_by(Job.created_at).limit(limit)
    ).all()
    return [(row[0], row[1], row[2] or []) for row in rows]
