"""The model registry: registered models and their versions. finish_succeeded ends a job and registers its
next version in one transaction (version numbers allocated under a row lock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.orm import Session

from service.db.base import db_clock
from service.db.jobs import owned
from service.db.tables import Job, ModelVersion, RegisteredModel, new_id, utcnow
from service.domain import JobStatus


def job_versions(*, session: Session, job_ids: list[str]) -> dict[str, tuple[str, int]]:
    """{job id: (model name, version)} for jobs that produced a model version."""
    if not job_ids:
        return {}
    stmt = (
        select(ModelVersion.job_id, RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.job_id.in_(job_ids))
    )
    return {job_id: (name, version) for job_id, name, version in session.execute(stmt)}


def list_team_models(*, session: Session, team: str) -> list[tuple[RegisteredModel, ModelVersion | None]]:
    """Registered models of a team, each with its latest version (None when it has none)."""
    latest = (
        select(ModelVersion.model_id, func.max(ModelVersion.version).label("version"))
        .group_by(ModelVersion.model_id)
        .subquery()
    )
    stmt = (
        select(RegisteredModel, ModelVersion)
        .outerjoin(latest, latest.c.model_id == RegisteredModel.id)
        .outerjoin(
            ModelVersion,
            and_(ModelVersion.model_id == RegisteredModel.id, ModelVersion.version == latest.c.version),
        )
        .where(RegisteredModel.team == team)
        .order_by(RegisteredModel.name)
    )
    return [(rm, mv) for rm, mv in session.execute(stmt)]


def get_team_model(*, session: Session, team: str, name: str) -> RegisteredModel | None:
    stmt = select(RegisteredModel).where(RegisteredModel.team == team, RegisteredModel.name == name)
    return session.scalars(stmt).first()


def list_model_versions(*, session: Session, model_id: str) -> list[ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.model_id == model_id).order_by(ModelVersion.version)
    return list(session.scalars(stmt))


def get_model_version(*, session: Session, model_id: str, version: int | None) -> ModelVersion | None:
    """One version, or the latest when version is None."""
    stmt = select(ModelVersion).where(ModelVersion.model_id == model_id)
    if version is None:
        stmt = stmt.order_by(ModelVersion.version.desc()).limit(1)
    else:
        stmt = stmt.where(ModelVersion.version == version)
    return session.scalars(stmt).first()


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
    parent: dict[str, Any] | None = None,
) -> ModelVersion | None:
    """Mark the job succeeded and register the next version of its model, in the caller's transaction.

    Version numbers are allocated under a lock on the registered-model row (PostgreSQL: SELECT ... FOR
    UPDATE; SQLite: the database write lock taken by the first UPDATE), so two jobs finishing together get
    consecutive versions. artifact_path(model_id, version) -> path (relative to DATA_DIR) to record.
    parent: the warm start's {"model", "version"} (training.init_from), recorded on the version.
    Returns None (nothing written) when this attempt no longer owns the job."""
    now = db_clock(session)
    won = session.execute(
        update(Job).where(*owned(job_id, attempt))
        .values(status=JobStatus.SUCCEEDED, finished_at=now, heartbeat_at=now, metrics=metrics, history=history,
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
    version_number = max(latest or 0, model.last_version or 0) + 1  # a deleted version's number is never reused
    model.last_version = version_number
    version = ModelVersion(
        model_id=model.id, version=version_number, job_id=job.id, dataset_id=job.dataset_id, spec=spec,
        metrics=metrics, artifact_path=artifact_path(model.id, version_number), checksums=checksums,
        parent=parent,
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


def team_artifact_paths(*, session: Session, team: str) -> list[str]:
    """artifact_path (relative to DATA_DIR) of every model version of a team (sized on disk for quotas)."""
    stmt = (
        select(ModelVersion.artifact_path)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(RegisteredModel.team == team)
    )
    return list(session.execute(stmt).scalars())
