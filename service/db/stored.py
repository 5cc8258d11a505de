"""The paths (relative to DATA_DIR) that database rows point at: what object storage must keep (the sweeper
removes published refs not in this set)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Dataset, Job, ModelVersion
from service.domain import ACTIVE_STATUSES


def live_paths(*, session: Session) -> set[str]:
    paths = set(session.execute(select(Dataset.path)).scalars())
    paths.update(session.execute(select(ModelVersion.artifact_path)).scalars())
    return paths


def live_prefixes(*, session: Session) -> set[str]:
    """Prefixes whose objects stay: the checkpoints of jobs that may still resume."""
    ids = session.execute(select(Job.id).where(Job.status.in_([str(s) for s in ACTIVE_STATUSES]))).scalars()
    return {f"jobs/{job_id}/" for job_id in ids}
