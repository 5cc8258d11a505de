"""Training jobs: validate the spec against the dataset -> create the row -> COMMIT -> enqueue; list, get, cancel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api import quotas
from service.api.comparisons import compare_of, compare_params
from service.api.deps import EnqueueDep, SessionDep, SettingsDep, StorageDep, get_principal, require
from service.api.ingest import received, upload_allowance
from service.api.one_call import create_from_upload, parse_json_body
from service.api.schemas import ErrorRead, JobCreate, JobList, JobRead, ModelRef, Progress
from service.api.warm_start import init_from_params
from service.auth import Principal
from service.config import Settings
from service.db import datasets as datasets_repo
from service.db import jobs as jobs_repo
from service.db import registry as registry_repo
from service.db import workers as workers_repo
from service.db.tables import Job, utcnow
from service.domain import ACTIVE_STATUSES, JobStatus
from service.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    UnsupportedMediaError,
)
from service.storage import Storage

log = logging.getLogger("headwise.api")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 409, 413, 415, 422, 429, 503, 507)}


def job_read(job: Job, model: tuple[str, int] | None = None, status_detail: str | None = None) -> JobRead:
    progress = jobs_repo.progress_of(job)
    return JobRead(
        id=job.id, status=job.status, dataset_id=job.dataset_id, model_name=job.model_name, spec=job.spec or {},
        progress=Progress(**{k: progress[k] for k in ("epoch", "epochs", "fraction") if progress.get(k) is not None}),
        history=job.history or [], metrics=job.metrics or {}, error=job.error,
        cancel_requested=bool(job.cancel_requested), attempts=job.attempts or 0, status_detail=status_detail,
        warnings=job.warnings or [],
        model=ModelRef(name=model[0], version=model[1]) if model else None,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at, compare=compare_of(job),
    )


def _read(session: Session, job: Job, lease: int) -> JobRead:
    detail = waiting_detail(session, [job], lease).get(job.id)
    return job_read(job, registry_repo.job_versions(session=session, job_ids=[job.id]).get(job.id), detail)


def waiting_detail(session: Session, jobs: list[Job], lease: int) -> dict[str, str]:
    """{job id: why it waits} for active jobs that no live worker is working on (the registry's view)."""
    active = [j for j in jobs if j.status in ACTIVE_STATUSES]
    if not active:
        return {}
    budgets = workers_repo.alive_budgets(session=session, lease_seconds=lease)
    alive = len(budgets)
    out: dict[str, str] = {}
    for job in active:
        if job.status == JobStatus.QUEUED and alive == 0:
            out[job.id] = "waiting for a worker: none is alive"
        elif job.status == JobStatus.QUEUED and (over := memory_wait(job, budgets)):
            out[job.id] = over
        elif job.status == JobStatus.RUNNING and not workers_repo.is_alive(session=session, worker_id=job.worker,
                                                                   lease_seconds=lease):
            out[job.id] = (f"its worker stopped heartbeating; a live worker's reaper requeues it once the lease "
                           f"({lease} s) expires" + ("" if alive else " (waiting for a worker: none is alive)"))
    return out


def memory_wait(job: Job, budgets: list[int | None]) -> str | None:
    """Why a queued job waits when its estimate exceeds every live worker's memory budget; else None."""
    need = job.memory_bytes
    if need is None or any(b is None or b >= need for b in budgets):
        return None
    from service.ml.memory import fmt_bytes

    return (f"waiting for a worker with a memory budget of at least {fmt_bytes(need)} (the job's estimated peak, "
            f"{need} bytes): the {len(budgets)} live worker(s) have at most {fmt_bytes(max(budgets))} "
            f"(HEADWISE_WORKER_MEMORY_BYTES); start a larger worker or lower training.batch_size")


def _get(session: Session, job_id: str, principal: Principal) -> Job:
    job = jobs_repo.get_team_job(session=session, job_id=job_id, team=principal.team)
    if job is None:
        raise NotFoundError(f"job '{job_id}' not found")
    return job


JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/JobUpload"}},
        },
    }
}


@router.post("", status_code=202, response_model=JobRead, responses=ERRORS, openapi_extra=JOB_BODY,
             summary="Queue a training job: JSON on an uploaded dataset, or multipart uploading the dataset in the "
                     "same call (the spec and every label are checked first)")
async def create_job(
    request: Request,
    principal: Annotated[Principal, Depends(require("jobs:write"))],
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    enqueue: EnqueueDep,
) -> JSONResponse:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        if not principal.has("datasets:write"):
            raise ForbiddenError("this API key lacks the scope 'datasets:write' (the call uploads a dataset)")
        left, message = upload_allowance(request, session, storage, settings, principal.team)
        async with received(request, settings, storage, quota_left=left, quota_message=message) as got:
            job = await run_in_threadpool(create_from_upload, session, storage, settings, got, principal.team,
                                          settings.WEIGHTS_DIR)
    elif ctype in ("application/json", ""):
        body = parse_json_body(await request.body(), JobCreate)
        job = await run_in_threadpool(_create_on_dataset, session, storage, settings, body, principal.team,
                                      settings.WEIGHTS_DIR)
    else:
        raise UnsupportedMediaError("send application/json (dataset_id, model_name, spec) or multipart/form-data "
                                    "(file, spec, model_name, dataset_name)")
    return await run_in_threadpool(_enqueue, session, job, enqueue)


def _create_on_dataset(session: Session, storage: Storage, settings: Settings, body: JobCreate, team: str,
                       weights_dir: Path | None = None) -> Job:
    from service.ml.data import encode_labels, resolve_spec
    from service.ml.spec import parse_spec
    from service.ml.weights import check_pretrained

    dataset = datasets_repo.get_dataset(session=session, dataset_id=body.dataset_id, team=team)
    if dataset is None:
        raise NotFoundError(f"dataset_id: dataset '{body.dataset_id}' not found")
    spec = parse_spec(body.spec)  # SpecError -> 422 naming the field
    check_pretrained(weights_dir, spec)  # model.pretrained not installed -> 422 (never at train time)
    table = storage.load_table(dataset.id, dataset.path)
    spec = resolve_spec(spec, table)  # unknown column, class not in data
    encode_labels(spec, table)  # DataError -> 422: wrong kinds, NaN/inf, naming row and column (not in the worker)
    params = init_from_params(session, team, spec)  # 404 / 422 naming spec.training.init_from
    compare, runs = compare_params(body.compare, spec)  # 422 naming compare.<field>
    params = {**(params or {}), **compare} if compare else params
    peak = quotas.admit_job(session, storage, settings, team, spec, len(table.keys), runs)  # 422 / 507 / 429
    job = jobs_repo.create_job(session=session, team=team, dataset_id=dataset.id, model_name=body.model_name,
                               spec=spec.to_json_dict(), params=params, warnings=audit_findings(spec, table),
                               memory_bytes=peak)
    session.commit()  # the worker must find the row: enqueue only after the commit
    return job


def audit_findings(spec, table) -> list[dict]:
    """The audit's warnings for a job about to be created (stored on the job). Advisory: they never block the
    job, not even when computing them fails (logged with the traceback)."""
    from service.ml.data import audit

    try:
        return audit(spec, table)["findings"]
    except Exception:  # noqa: BLE001 - a bug in a warning must not refuse a valid job
        log.exception("audit warnings failed for a new job; the job is created without them")
        return []


def _enqueue(session: Session, job: Job, enqueue) -> JSONResponse:
    try:
        enqueue(job.id)
    except Exception as exc:  # noqa: BLE001 - broker down: the job cannot start, say so
        log.error("could not enqueue job %s: %s", job.id, exc)
        jobs_repo.finish_failed(session=session, job_id=job.id, error=f"could not enqueue the job: {exc}")
        session.commit()
        raise UnavailableError(f"job '{job.id}' could not be queued: the broker is unreachable") from None
    session.refresh(job)
    return JSONResponse(job_read(job).model_dump(mode="json"), status_code=202)


@router.get("", response_model=JobList, responses=ERRORS, summary="The team's jobs, newest first")
def list_jobs(
    principal: Annotated[Principal, Depends(get_principal)],
    session: SessionDep,
    settings: SettingsDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JobList:
    jobs, total = jobs_repo.list_team_jobs(session=session, team=principal.team, status=status, limit=limit,
                                      offset=offset)
    models = registry_repo.job_versions(session=session, job_ids=[j.id for j in jobs])
    details = waiting_detail(session, jobs, settings.JOB_LEASE_SECONDS)
    return JobList(items=[job_read(j, models.get(j.id), details.get(j.id)) for j in jobs], total=total,
                   limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobRead, responses=ERRORS, summary="One job with progress and history")
def get_job(job_id: str, principal: Annotated[Principal, Depends(get_principal)], session: SessionDep,
            settings: SettingsDep) -> JobRead:
    return _read(session, _get(session, job_id, principal), settings.JOB_LEASE_SECONDS)


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses={**ERRORS, 202: {"model": JobRead, "description": "running: cancel requested; it ends cancelled"}},
    summary="Cancel: a queued job never starts (200); a running job stops at its next step (202); 409 if finished",
)
def cancel_job(
    job_id: str, principal: Annotated[Principal, Depends(require("jobs:write"))], session: SessionDep,
    settings: SettingsDep,
) -> JSONResponse:
    job = _get(session, job_id, principal)
    if job.status == JobStatus.QUEUED and jobs_repo.cancel_queued_job(session=session, job_id=job.id, when=utcnow()):
        code = 200
    elif jobs_repo.request_job_cancel(session=session, job_id=job.id):
        code = 202
    else:
        session.refresh(job)
        if job.status in ACTIVE_STATUSES:  # pragma: no cover - lost a race twice; ask again
            raise ConflictError(f"job '{job_id}' changed state while cancelling; try again")
        raise ConflictError(f"job '{job_id}' already finished ({job.status}); nothing to cancel")
    session.commit()
    session.refresh(job)
    return JSONResponse(_read(session, job, settings.JOB_LEASE_SECONDS).model_dump(mode="json"), status_code=code)
