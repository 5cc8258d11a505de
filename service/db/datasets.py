"""Datasets: uploaded archives' rows. Team scoping: reads take `team` and return None for another team's row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.db.tables import Dataset, Job, ModelVersion
from service.domain import ACTIVE_STATUSES


def insert_dataset(*, session: Session, **fields: Any) -> Dataset:
    row = Dataset(**fields)
    session.add(row)
    session.flush()
    return row


def get_dataset(*, session: Session, dataset_id: str, team: str) -> Dataset | None:
    stmt = select(Dataset).where(Dataset.id == dataset_id, Dataset.team == team)
    return session.scalars(stmt).first()


def list_datasets(*, session: Session, team: str, limit: int, offset: int) -> tuple[list[Dataset], int]:
    where = Dataset.team == team
    total = session.scalar(select(func.count()).select_from(Dataset).where(where)) or 0
    stmt = select(Dataset).where(where).order_by(Dataset.created_at.desc(), Dataset.id)
    return list(session.scalars(stmt.limit(limit).offset(offset))), total


def dataset_active_jobs(*, session: Session, dataset_id: str) -> list[str]:
    stmt = select(Job.id).where(
        Job.dataset_id == dataset_id, Job.status.in_(sorted(ACTIVE_STATUSES))
    )
    return list(session.scalars(stmt))


def delete_dataset(*, session: Session, dataset_id: str) -> None:
    # jobs.dataset_id / model_versions.dataset_id are ON DELETE SET NULL; do it explicitly as well so the
    # result does not depend on the database enforcing foreign keys.
    session.execute(update(Job).where(Job.dataset_id == dataset_id).values(dataset_id=None))
    session.execute(
        update(ModelVersion).where(ModelVersion.dataset_id == dataset_id).values(dataset_id=None)
    )
    session.execute(delete(Dataset).where(Dataset.id == dataset_id))


def team_dataset_bytes(*, session: Session, team: str) -> int:
    """Bytes of a team's uploaded archives (the TEAM_MAX_STORAGE_BYTES quota)."""
    total = session.execute(select(func.sum(Dataset.size_bytes)).where(Dataset.team == team)).scalar_one()
    return int(total or 0)
