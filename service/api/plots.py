"""PNG plots: a job's training curves, and a model version's per-head evaluation plot.

Both are files the worker stored with the version when training ended (service/reports/version.py): the API
serves them and runs no model. The one exception, written down: the curves of a job that has not produced a
version yet (running, failed, cancelled) are drawn here from its stored history on request, since they change
every epoch; that imports matplotlib lazily and still runs no model. Plain `def` endpoints: FastAPI runs them in
its threadpool, so reading or drawing never blocks the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi import Path as PathParam
from sqlalchemy.orm import Session

from service.api.deps import SessionDep, StorageDep, get_principal, require
from service.api.models import get_version
from service.api.schemas import ErrorRead
from service.auth import Principal
from service.db import jobs as jobs_repo
from service.db import registry as registry_repo
from service.domain import JobStatus
from service.errors import ConflictError, NotFoundError
from service.reports.version import CURVES_FILE, REPORTS_DIR, task_file
from service.storage import Storage

router = APIRouter(tags=["plots"])
PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"},
       **{code: {"model": ErrorRead} for code in (401, 403, 404, 409)}}


def _png(data: bytes, cache: str) -> Response:
    return Response(content=data, media_type="image/png", headers={"Cache-Control": cache})


def _stored(storage: Storage, artifact_path: str, name: str) -> Path | None:
    path = storage.abs(artifact_path) / REPORTS_DIR / name
    return path if path.is_file() else None


def _version_curves(session: Session, principal: Principal, storage: Storage, job_id: str) -> Path | None:
    found = registry_repo.job_versions(session=session, job_ids=[job_id]).get(job_id)
    if found is None:
        return None
    mv = get_version(session, principal, found[0], found[1])
    return _stored(storage, mv.artifact_path, CURVES_FILE)


@router.get("/v1/jobs/{job_id}/plots/curves.png", response_class=Response, responses=PNG,
            summary="Training curves: train/val loss and the main metric per head (+ learned task weights)")
def job_curves(job_id: str, principal: Annotated[Principal, Depends(get_principal)],
               session: SessionDep, storage: StorageDep) -> Response:
    job = jobs_repo.get_team_job(session=session, job_id=job_id, team=principal.team)
    if job is None:
        raise NotFoundError(f"job '{job_id}' not found")
    if job.status == JobStatus.SUCCEEDED and (stored := _version_curves(session, principal, storage, job.id)):
        return _png(stored.read_bytes(), "private, max-age=3600")
    from service.reports import plots  # matplotlib: only for curves still changing

    weighting = (job.spec or {}).get("weighting") or {}
    title = f"{job.model_name} · job {job.id[:8]} · {job.status}"
    return _png(plots.curves_png(list(job.history or []), weighting, title), "no-store")


@router.get("/v1/models/{name}/versions/{version}/plots/{task}.png", response_class=Response, responses=PNG,
            summary="Per-head plot on the validation split: confusion matrix (classification) or "
                    "predicted-vs-true (regression); end to end for gated heads, gate mistakes marked")
def version_task_plot(
    name: str, version: Annotated[int, PathParam(ge=1, le=2**31 - 1)], task: str,
    principal: Annotated[Principal, Depends(require("models:read"))],
    session: SessionDep, storage: StorageDep,
) -> Response:
    mv = get_version(session, principal, name, version)
    tasks = [t.get("name") for t in (mv.spec or {}).get("tasks", [])]
    if task not in tasks:
        raise NotFoundError(f"model '{name}' version {version} has no task '{task}'; tasks are: {', '.join(tasks)}")
    stored = _stored(storage, mv.artifact_path, task_file(task))
    if stored is None:
        raise ConflictError(f"model '{name}' version {version} has no stored plots (it was registered without the "
                            "reports the worker writes when training ends)")
    return _png(stored.read_bytes(), "private, max-age=3600")
