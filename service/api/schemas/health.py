"""The service's own state: health, readiness, workers, usage (README "Limits and quotas")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.api.schemas.base import (
    Timestamp,
)


class HealthRead(BaseModel):
    status: str = "ok"


class WorkersAlive(BaseModel):
    alive: int | None = None  # None when the database could not say
    detail: str


class ReadyRead(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    workers: WorkersAlive | None = None  # reported, never a readiness condition (README "Scaling out")
    error: str | None = None  # set with 503, like every error body
    detail: str | None = None


class WorkerRead(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    device: str
    current_job: str | None = None  # shown for the caller's team (root: every team)
    memory_budget_bytes: int | None = Field(default=None, description="HEADWISE_WORKER_MEMORY_BYTES as the worker "
                                            "resolved it: it claims only jobs whose estimate fits")
    memory_used_bytes: int | None = Field(default=None, description="resident memory of the worker's processes "
                                          "at its last heartbeat")
    alive: bool
    started_at: Timestamp
    last_seen_at: Timestamp
    stopped_at: Timestamp | None = None


class WorkerList(BaseModel):
    items: list[WorkerRead]
    alive: int
    lease_seconds: int


class QuotaUse(BaseModel):
    used: int | None = Field(default=None, description="current use (absent for per-job limits)")
    limit: int | None = Field(description="null: no limit")
    setting: str = Field(description="the HEADWISE_* setting holding the limit")


class StorageUse(QuotaUse):
    datasets: int = Field(description="bytes of stored dataset archives (uploaded or imported)")
    artifacts: int = Field(description="bytes of model version files")
    imports: int = Field(default=0, description="bytes of dataset imports under way (known once a worker has "
                                                "listed the source)")


class UsageRead(BaseModel):
    team: str
    active_jobs: QuotaUse
    storage_bytes: StorageUse
    job_sample_epochs: QuotaUse
    worker_memory_bytes: QuotaUse = Field(description="this API's budget (the 422 at job creation); each worker's "
                                                      "own budget is in GET /v1/workers")
