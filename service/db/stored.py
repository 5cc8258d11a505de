"""The paths (relative to DATA_DIR) that database rows point at: what object storage must keep (the sweeper
removes published refs not in this set)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Dataset, ModelVersion


def live_paths(*, session: Session) -> set[str]:
    paths = set(session.execute(select(Dataset.path)).scalars())
    paths.update(session.execute(select(ModelVersion.artifact_path)).scalars())
    return paths
