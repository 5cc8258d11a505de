"""Dataset imports from object storage: queued -> running (one worker claims) -> succeeded | failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.base import db_clock
from service.db.tables import DatasetImport


def create_import(*, session: Session, team: str, source: str, name: str | None,
                  spec: dict[str, Any] | None) -> DatasetImport:
    row = DatasetImport(team=team, source=source, name=name, spec=spec, status="queued", progress={})
    session.add(row)
    session.flush()
    return row


def get_team_import(*, session: Session, import_id: str, team: str) -> DatasetImport | None:
    return session.scalars(select(DatasetImport).where(DatasetImport.id == import_id,
                                                       DatasetImport.team == team)).first()


def claim_import(*, session: Session, import_id: str) -> DatasetImport | None:
    result = session.execute(update(DatasetImport).where(DatasetImport.id == import_id,
                                                         DatasetImport.status == "queued")
                             .values(status="running").execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    return session.execute(select(DatasetImport).where(DatasetImport.id == import_id)
                           .execution_options(populate_existing=True)).scalar_one()


def write_progress(*, session: Session, import_id: str, progress: dict[str, Any]) -> None:
    session.execute(update(DatasetImport).where(DatasetImport.id == import_id).values(progress=progress))


def finish(*, session: Session, import_id: str, status: str, error: str | None = None,
           dataset_id: str | None = None) -> None:
    session.execute(update(DatasetImport).where(DatasetImport.id == import_id, DatasetImport.status == "running")
                    .values(status=status, error=error, dataset_id=dataset_id, finished_at=db_clock(session)))


IN_FLIGHT = ("queued", "running")


def team_in_flight_bytes(*, session: Session, team: str, exclude: str | None = None) -> int:
    """Bytes of a team's imports still under way (progress["bytes"], known once the worker has listed the
    source): they count in the TEAM_MAX_STORAGE_BYTES quota until the import's dataset row replaces them."""
    rows = session.execute(select(DatasetImport.id, DatasetImport.progress)
                           .where(DatasetImport.team == team, DatasetImport.status.in_(IN_FLIGHT))).all()
    return sum(int((progress or {}).get("bytes") or 0) for row_id, progress in rows if row_id != exclude)
