"""Datasets, their audit, and dataset imports from object storage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.api.schemas.base import (
    AuditSpecJson,
    Page,
    Timestamp,
    _Read,
)
from service.api.schemas.payloads import (
    ColumnSummary,
)
from service.domain import ImportStatus


class DatasetRead(_Read):
    id: str
    name: str
    format: str
    filename: str
    num_samples: int
    columns: dict[str, ColumnSummary]
    size_bytes: int
    sha256: str
    created_at: Timestamp


class DatasetCreated(DatasetRead):
    warnings: list[str] = []


class DatasetList(Page):
    items: list[DatasetRead]


class AuditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: AuditSpecJson


class AuditFinding(BaseModel):
    """One audit warning (never blocking): the head, its column and, where one applies, the class."""

    code: str = Field(description="no_labels | sparse | few_labels | validation_only | gate_no_labels | constant | "
                                  "gate_violations (service/ml/audit_checks.py)")
    task: str
    column: str
    class_: str | None = Field(default=None, alias="class", serialization_alias="class")
    message: str

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class AuditRead(BaseModel):
    """A dry run of POST /v1/jobs on a stored dataset: always 200 for a spec it could read. `fits` says whether
    job creation would accept the spec (its 422s: spec_errors, label_errors, limit_errors); the team's quotas
    (429/507) are not part of it, as they change with the team's other jobs."""

    audit: dict[str, Any] | None = Field(description="the engine's audit (coverage, class counts, warnings, "
                                                     "findings); null when the spec has errors")
    spec_errors: list[str] = Field(description="the spec against the dataset (unknown columns, classes)")
    limit_errors: list[str] = Field(default=[], description="over the worker memory budget or the per-job "
                                    "epochs x samples limit: the 422 messages POST /v1/jobs would give")
    fits: bool = Field(default=True, description="false when POST /v1/jobs would refuse this spec with a 422")
    warnings: list[AuditFinding] = Field(default=[], description="the audit's warnings (the job stores them)")
    memory: dict[str, Any] | None = Field(
        default=None, description="estimated peak training memory (peak_bytes, parts, budget_bytes, fits, "
        "largest_batch_size, workers); null when the spec has errors")


class ImportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(max_length=1000, examples=["s3://team-bucket/datasets/shapes/"])
    name: str | None = Field(default=None, max_length=200)
    spec: dict[str, Any] | None = None  # optional: labels are checked against it, as for an upload


class ImportRead(_Read):
    id: str
    status: ImportStatus
    source: str
    name: str | None
    progress: dict[str, Any]
    error: str | None
    dataset_id: str | None
    created_at: Timestamp
    finished_at: Timestamp | None
