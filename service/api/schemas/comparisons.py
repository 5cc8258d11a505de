"""Comparison jobs: the report of GET /v1/jobs/{id}/comparison (README "Comparison jobs"; built by
service/ml/compare_report.py in the worker, served as stored)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.domain import JobStatus


class ComparisonCompute(BaseModel):
    seconds: float = Field(description="training + validation seconds of the variant's sub-runs, all seeds")
    epochs: int
    samples: int = Field(description="training images processed (epochs x training rows)")


class ComparisonVariant(BaseModel):
    name: str = Field(description="main | weighting:<strategy> | single_task")
    strategy: str
    runs: int
    runs_done: int = 0
    compute: ComparisonCompute | None = None


class ComparisonResult(BaseModel):
    variant: str
    mean: float | None
    std: float | None = Field(description="sample std over seeds (null with one seed)")
    min: float | None
    max: float | None
    values: list[float | None] = Field(description="per seed, in seed order")
    labelled: int


class ComparisonVerdict(BaseModel):
    single_task: str | None = Field(description="multi-task better | multi-task worse | within noise (null: no "
                                    "single-task runs yet)")
    difference: float | None = Field(description="multi-task - single-task mean, > 0 = multi-task better")
    noise: float | None
    tol: float | None = None
    method: str = Field(description="bootstrap (one seed) | seeds+bootstrap")


class ComparisonBest(BaseModel):
    variant: str
    strategy: str
    mean: float
    fixed_within_noise: bool | None


class ComparisonHead(BaseModel):
    head: str
    metric: str
    higher_is_better: bool
    labelled: int = Field(description="validation rows scored")
    baseline: dict[str, Any] | None = Field(description="trivial baseline: {kind: majority|mean, value}")
    beats_baseline: bool | None
    results: list[ComparisonResult]
    verdict: ComparisonVerdict
    best_weighting: ComparisonBest | None


class ComparisonOverall(BaseModel):
    variant: str
    strategy: str
    mean_rank: float
    ranks: dict[str, float]
    fixed_within_noise: bool | None
    note: str


class ComparisonRead(BaseModel):
    job_id: str
    status: JobStatus
    complete: bool = Field(description="every sub-run finished (the report no longer changes)")
    runs_done: int
    runs_total: int
    compare: dict[str, Any]
    seeds: list[int]
    variants: list[ComparisonVariant]
    heads: list[ComparisonHead]
    best_weighting: ComparisonOverall | None
    registered: dict[str, Any] | None = Field(description="{variant, seed, version} of the registered model")
    verdict_rule: str | None
    register_rule: str | None
    plot: str | None = Field(description="the plot's path (PNG)")
