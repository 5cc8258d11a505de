"""Dataset imports from object storage: queued -> running (one worker claims) -> succeeded | failed.

Leased like jobs (service/db/jobs.py): the claim takes attempt N, and only the worker holding attempt N may
heartbeat, write progress or finish the import; the reaper requeues a running import whose heartbeat is older
than the lease (its worker died) or fails it after MAX_ATTEMPTS, and rings again a queued import nobody claimed
within the lease (the API replica died between commit and enqueue, or the broker lost the message)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db.base import db_clock
from service.db.tables import DatasetImport
from service.domain import ImportStatus

IN_FLIGHT = (ImportStatus.QUEUED, ImportStatus.RUNNING)  # an import that may still change


def create_import(*, session: Session, team: str, source: str, name: str | None,
                  spec: dict[str, Any] | None) -> DatasetImport:
    row = DatasetImport(team=team, source=source, name=name, spec=spec, status="queued", progress={}, attempts=0,
                        enqueued_at=db_clock(session))
    session.add(row)
    session.flush()
    return row


def get_team_import(*, session: Session, import_id: str, team: str) -> DatasetImport | None:
    return session.scalars(select(DatasetImport).where(DatasetImport.id == import_id,
                                                       DatasetImport.team == team)).first()


def claim_import(*, session: Session, import_id: str, worker: str | None = None) -> DatasetImport | None:
    """queued -> running with the next attempt number (None when another delivery claimed it first)."""
    now = db_clock(session)
    result = session.execute(update(DatasetImport).where(DatasetImport.id == import_id,
                                                         DatasetImport.status == "queued")
                             .values(status="running", attempts=DatasetImport.attempts + 1, worker=worker,
                                     heartbeat_at=now)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    return session.execute(select(DatasetImport).where(DatasetImport.id == import_id)
                           .execution_options(populate_existing=True)).scalar_one()


def _owned(import_id: str, attempt: int | None) -> tuple:
    conds = (DatasetImport.id == import_id, DatasetImport.status == "running")
    return conds + ((DatasetImport.attempts == attempt),) if attempt is not None else conds


def heartbeat(*, session: Session, import_id: str, attempt: int) -> bool:
    """Extend the lease; False when this attempt no longer owns the import (it was requeued)."""
    result = session.execute(update(DatasetImport).where(*_owned(import_id, attempt))
                             .values(heartbeat_at=db_clock(session)))
    return result.rowcount == 1


def write_progress(*, session: Session, import_id: str, progress: dict[str, Any], attempt: int | None = None
                   ) -> bool:
    result = session.execute(update(DatasetImport).where(*_owned(import_id, attempt))
                             .values(progress=progress, heartbeat_at=db_clock(session)))
    return result.rowcount == 1


def finish(*, session: Session, import_id: str, status: str, error: str | None = None,
           dataset_id: str | None = None, attempt: int | None = None) -> bool:
    """running -> succeeded | failed (fenced by attempt when given); without attempt a queued import can be
    failed too (it could not be enqueued)."""
    conds = (_owned(import_id, attempt) if attempt is not None else
             (DatasetImport.id == import_id, DatasetImport.status.in_(IN_FLIGHT)))
    result = session.execute(update(DatasetImport).where(*conds)
                             .values(status=status, error=error, dataset_id=dataset_id,
                                     finished_at=db_clock(session)))
    return result.rowcount == 1


def _lease_start():
    return func.coalesce(DatasetImport.heartbeat_at, DatasetImport.created_at)


def stale_running_imports(*, session: Session, stale_before: datetime, limit: int = 100) -> list[tuple[str, int]]:
    """(import id, attempts) of running imports whose heartbeat is older than stale_before."""
    rows = session.execute(select(DatasetImport.id, DatasetImport.attempts)
                           .where(DatasetImport.status == "running", _lease_start() < stale_before)
                           .order_by(DatasetImport.created_at).limit(limit)).all()
    return [(r[0], r[1]) for r in rows]


def fail_stale_import(*, session: Session, import_id: str, attempt: int, stale_before: datetime, error: str) -> bool:
    result = session.execute(update(DatasetImport)
                             .where(*_owned(import_id, attempt), _lease_start() < stale_before)
                             .values(status="failed", error=error, finished_at=db_clock(session)))
    return result.rowcount == 1


def requeue_import(*, session: Session, import_id: str, attempt: int, stale_before: datetime) -> bool:
    """running -> queued for an import whose worker vanished (same attempt, heartbeat still stale)."""
    result = session.execute(update(DatasetImport)
                             .where(*_owned(import_id, attempt), _lease_start() < stale_before)
                             .values(status="queued", worker=None, heartbeat_at=None, enqueued_at=db_clock(session)))
    return result.rowcount == 1


def unclaimed_imports(*, session: Session, rung_before: datetime, limit: int = 100) -> list[str]:
    """Queued imports whose doorbell (enqueued_at) is older than rung_before: nobody claimed them in a lease."""
    rows = session.execute(select(DatasetImport.id)
                           .where(DatasetImport.status == "queued",
                                  func.coalesce(DatasetImport.enqueued_at, DatasetImport.created_at) < rung_before)
                           .order_by(DatasetImport.created_at).limit(limit)).all()
    return [r[0] for r in rows]


def count_queued_imports(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(DatasetImport)
                          .where(DatasetImport.status == "queued")) or 0


def ring_import(*, session: Session, import_id: str, rung_before: datetime) -> bool:
    """Reset the doorbell time of a queued import before enqueueing it again (one ring per lease)."""
    result = session.execute(update(DatasetImport)
                             .where(DatasetImport.id == import_id, DatasetImport.status == "queued",
                                    func.coalesce(DatasetImport.enqueued_at, DatasetImport.created_at) < rung_before)
                             .values(enqueued_at=db_clock(session)))
    return result.rowcount == 1


def team_in_flight_bytes(*, session: Session, team: str, exclude: str | None = None) -> int:
    """Bytes of a team's imports still under way (progress["bytes"], known once the worker has listed the
    source): they count in the TEAM_MAX_STORAGE_BYTES quota until the import's dataset row replaces them."""
    rows = session.execute(select(DatasetImport.id, DatasetImport.progress)
                           .where(DatasetImport.team == team, DatasetImport.status.in_(IN_FLIGHT))).all()
    return sum(int((progress or {}).get("bytes") or 0) for row_id, progress in rows if row_id != exclude)
