"""Jobs: training jobs, and the jobs that run a model version (batch predictions and evaluations,
service/api/batch_predictions.py, service/api/evaluations.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from service.api.schemas.base import (
    NAME_PATTERN,
    Page,
    SpecJson,
    Timestamp,
)
from service.api.schemas.datasets import AuditFinding
from service.api.schemas.models import ALIAS_PATTERN, ModelRef
from service.api.schemas.payloads import (
    HistoryEntry,
    Metrics,
)
from service.domain import JobStatus


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str
    model_name: str = Field(pattern=NAME_PATTERN, description="registered model name (letters, digits, . _ -)")
    spec: SpecJson
    compare: dict[str, Any] | None = Field(
        default=None, description="optional comparison (README \"Comparison jobs\"): {single_task: bool, weighting: "
        "[strategy], seeds: 1..5, register: main|best}; the main spec and each variant train as sub-runs of this job")


class Progress(BaseModel):
    epoch: int = Field(default=0, description="epochs completed")
    epochs: int | None = None
    fraction: float = 0.0
    batch: int | None = Field(default=None, description="batches done in the running epoch")
    batches: int | None = Field(default=None, description="batches per epoch")
    images_per_second: float | None = Field(default=None, description="training pace in the running epoch")
    eta_seconds: float | None = Field(default=None, description="the rest of the run at that pace")

    @model_serializer(mode="wrap")
    def _omit_unreported(self, handler):  # the batch fields appear only once the worker reported them
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in ("epoch", "epochs", "fraction")}


class JobRead(BaseModel):
    id: str
    status: JobStatus
    dataset_id: str | None
    model_name: str
    spec: SpecJson
    progress: Progress
    history: list[HistoryEntry]
    metrics: Metrics
    error: str | None = None
    cancel_requested: bool
    attempts: int
    # queued/running jobs only: set while no live worker can take it on (e.g. "waiting for a worker: none alive")
    status_detail: str | None = None
    warnings: list[AuditFinding] = Field(default=[], description="the audit's warnings at creation")
    model: ModelRef | None = None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    compare: dict[str, Any] | None = Field(default=None, description="the comparison asked for (null: none); "
                                           "its report: GET /v1/jobs/{id}/comparison")


class JobList(Page):
    items: list[JobRead]


class BatchPredictionCreate(BaseModel):
    dataset_id: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="default: the latest version")
    alias: str | None = Field(default=None, pattern=ALIAS_PATTERN, description="the version an alias points at "
                              "(exclusive with version)")


class BatchPredictionRead(BaseModel):
    id: str
    model: ModelRef
    dataset_id: str | None
    status: JobStatus
    fraction: float = Field(description="share of the images done")
    images: int | None = Field(description="images predicted (once succeeded)")
    error: str | None
    cancel_requested: bool
    results: dict[str, str] | None = Field(description="result file URLs, once succeeded")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class BatchPredictionList(BaseModel):
    items: list[BatchPredictionRead]


class EvaluationCreate(BaseModel):
    dataset_id: str = Field(min_length=1, max_length=64)


class EvaluationRead(BaseModel):
    id: str
    model: ModelRef
    dataset_id: str | None
    status: JobStatus
    fraction: float
    images: int | None = Field(description="images evaluated (once succeeded)")
    heads: dict[str, dict[str, Any]] | None = Field(
        description="per head: labelled, the metrics of its type; gated heads: plain metrics given the true gate, "
                    "e2e_* end to end (the predicted gate must also let the sample through), gate rates")
    plots: dict[str, str] | None = Field(description="per head: confusion matrix / predicted-vs-true PNG URL")
    error: str | None
    created_at: Timestamp
    finished_at: Timestamp | None


class EvaluationList(BaseModel):
    items: list[EvaluationRead]
