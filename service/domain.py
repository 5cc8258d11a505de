"""Words every layer shares (API, database, worker, metrics, client, UI): the job status enum and the main
metric of a head. Standard library only, so the light client can import it."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

# API key scopes (admin holds every scope) and the team of keys created without one.
SCOPES = ("datasets:write", "jobs:write", "models:read", "models:write", "predict", "admin")
DEFAULT_TEAM = "default"


class JobStatus(StrEnum):
    """A training job's status: the one list used by the database, API schemas, metrics, events, the client and
    (served in the page, see service/api/ui.py) the dashboard. Values are what is stored and sent."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


class ImportStatus(StrEnum):
    """A dataset import's status (an import cannot be cancelled)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})  # a job that may still change
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# Preferred "main" validation metric per head, first present wins.
MAIN_METRICS = ("accuracy", "macro_f1", "f1", "auroc", "auc", "mae", "rmse", "r2", "gated_accuracy")
NON_METRICS = {"loss", "labelled", "count", "n"}


def main_metric(val: dict[str, Any]) -> str | None:
    """Name of the head's main validation metric in one history item's val[task] dict."""
    numeric = [k for k, v in val.items() if k not in NON_METRICS and isinstance(v, int | float)
               and not isinstance(v, bool)]
    for name in MAIN_METRICS:
        if name in numeric:
            return name
    return numeric[0] if numeric else None
