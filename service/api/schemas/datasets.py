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


class AuditRead(BaseModel):
    audit: dict[str, Any] | None = Field(description="the engine's audit; null when the spec has errors")
    spec_errors: list[str]
    memory: dict[str, Any] | None = Field(
        default=None, description="estimated peak training memory (peak_bytes, parts, budget_bytes, fits, "
        "largest_batch_size); null when the spec has errors")


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
