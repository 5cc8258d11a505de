"""Comparison jobs (README "Comparison jobs"): the `compare` block of POST /v1/jobs (checked here for both the
JSON and the one-call form) and its report, GET /v1/jobs/{id}/comparison, plus the comparison plot.

The block and the report live in the job row (`params.compare`, `params.plan`, `params.comparison`: the worker
writes the report after every sub-run, worker/compare.py); the API only serves them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from service.api.deps import SessionDep, StorageDep, get_principal
from service.api.schemas import ComparisonRead, ErrorRead
from service.auth import Principal
from service.db import jobs as jobs_repo
from service.db import registry as registry_repo
from service.db.tables import Job
from service.domain import JobStatus
from service.errors import NotFoundError, ValidationError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404)}
PLOT = "comparison.png"


def compare_params(block: Any, spec: Any) -> tuple[dict[str, Any] | None, int]:
    """A request's compare block (None: none) -> (the job's params, number of sub-runs); SpecError -> 422
    naming the field (compare.weighting[1], compare.seeds, ...)."""
    if block is None:
        return None, 1
    from service.ml.compare import check_compare, plan_summary

    norm = check_compare(block, spec)
    plan = plan_summary(spec, norm)
    return {"compare": norm, "plan": plan}, len(plan["runs"])


def compare_field(text: str | None) -> Any:
    """The one-call form's `compare` field (JSON text) -> the block (None when absent)."""
    if text is None or not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"compare: not valid JSON ({exc})") from None


def compare_of(job: Job) -> dict[str, Any] | None:
    params = job.params if job.kind == "train" and isinstance(job.params, dict) else {}
    block = params.get("compare")
    return block if isinstance(block, dict) else None


def _job(session, job_id: str, principal: Principal) -> Job:
    job = jobs_repo.get_team_job(session=session, job_id=job_id, team=principal.team)
    if job is None:
        raise NotFoundError(f"job '{job_id}' not found")
    if compare_of(job) is None:
        raise NotFoundError(f"job '{job_id}' has no compare block; create the job with one (README "
                            "\"Comparison jobs\")")
    return job


@router.get("/{job_id}/comparison", response_model=ComparisonRead, responses=ERRORS,
            summary="A comparison job's report: per head and variant the validation metric and its spread over "
                    "seeds, the multi-task vs single-task verdict, the best weighting, baselines and compute "
                    "(complete: false while sub-runs are still running)")
def get_comparison(job_id: str, principal: Annotated[Principal, Depends(get_principal)],
                   session: SessionDep) -> ComparisonRead:
    job = _job(session, job_id, principal)
    params, state = job.params, job.params.get("comparison") or {}
    plan, report = params.get("plan") or {}, state.get("report") or {}
    runs_done, runs_total = len(state.get("runs") or {}), len(plan.get("runs") or [])
    registered = dict(state["registered"]) if state.get("registered") else None
    if registered is not None:
        found = registry_repo.job_versions(session=session, job_ids=[job.id]).get(job.id)
        registered["version"] = found[1] if found else None
    return ComparisonRead(
        job_id=job.id, status=job.status, complete=runs_total > 0 and runs_done == runs_total,
        runs_done=runs_done, runs_total=runs_total, compare=params["compare"], seeds=plan.get("seeds") or [],
        variants=report.get("variants") or plan.get("variants") or [], heads=report.get("heads") or [],
        best_weighting=report.get("best_weighting"), registered=registered,
        verdict_rule=report.get("verdict_rule"), register_rule=report.get("register_rule"),
        plot=f"/v1/jobs/{job.id}/plots/{PLOT}",
    )


@router.get("/{job_id}/plots/comparison.png", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "a PNG image"}, **ERRORS},
    summary="The comparison plot: per head the metric of every variant (mean, min..max over seeds, each seed) and "
            "the trivial baseline")
def comparison_plot(job_id: str, principal: Annotated[Principal, Depends(get_principal)], session: SessionDep,
                    storage: StorageDep) -> Response:
    job = _job(session, job_id, principal)
    found = registry_repo.job_versions(session=session, job_ids=[job.id]).get(job.id)
    if job.status == JobStatus.SUCCEEDED and found is not None:
        from service.api.models import get_version
        from service.reports.version import REPORTS_DIR

        mv = get_version(session, principal, found[0], found[1])
        path = storage.abs(mv.artifact_path) / REPORTS_DIR / PLOT
        if path.is_file():
            return Response(path.read_bytes(), media_type="image/png",
                            headers={"Cache-Control": "private, max-age=3600"})
    from service.reports.compare import comparison_png  # matplotlib: only while the report still changes

    report = (job.params.get("comparison") or {}).get("report") or {}
    png = comparison_png(report, f"{job.model_name} · job {job.id[:8]} · {job.status}")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
