"""Evaluation jobs: a model version scored on a labelled dataset by the workers (kind "evaluate": same claim, lease,
reaper and cancel as training). The dataset's labels are checked against the version's spec before the job is
queued (422 naming row and column, as for training).

  POST /v1/models/{name}/versions/{v}/evaluations {"dataset_id"}     202, scope jobs:write or predict
  GET  /v1/models/{name}/versions/{v}/evaluations[/{id}]              scope models:read
  GET  /v1/models/{name}/versions/{v}/evaluations/{id}/plots/{task}.png
  POST /v1/models/{name}/versions/{v}/evaluations/{id}/cancel         scope jobs:write or predict
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.orm import Session

from service.api.batch_predictions import cancel
from service.api.deps import EnqueueDep, SessionDep, StorageDep, require
from service.api.models import get_version
from service.api.schemas import (
    ALIAS_PATTERN,
    ErrorRead,
    EvaluationCreate,
    EvaluationList,
    EvaluationRead,
    ModelRef,
)
from service.auth import Principal
from service.db import datasets as datasets_repo
from service.db import jobs as jobs_repo
from service.db import model_jobs
from service.db.tables import Job
from service.domain import JobStatus
from service.errors import NotFoundError, UnavailableError

log = logging.getLogger("headwise.api")
router = APIRouter(prefix="/v1/models", tags=["evaluations"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 409, 422, 503)}
Writer = Annotated[Principal, Depends(require("jobs:write", "predict"))]
Reader = Annotated[Principal, Depends(require("models:read"))]
Version = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
BASE = "/{name}/versions/{version}/evaluations"


def _read(job: Job) -> EvaluationRead:
    version = (job.params or {}).get("version", 0)
    heads = (job.metrics or {}).get("heads") if job.status == JobStatus.SUCCEEDED else None
    base = f"/v1/models/{job.model_name}/versions/{version}/evaluations/{job.id}"
    return EvaluationRead(
        id=job.id, model=ModelRef(name=job.model_name, version=version), dataset_id=job.dataset_id,
        status=job.status, fraction=float((job.progress or {}).get("fraction", 0.0)),
        images=(job.metrics or {}).get("images"), heads=heads,
        plots={t: f"{base}/plots/{t}.png" for t in heads} if heads else None,
        error=job.error, created_at=job.created_at, finished_at=job.finished_at)


def _get(session: Session, principal: Principal, name: str, version: int, job_id: str) -> Job:
    job = model_jobs.get(session=session, kind=model_jobs.EVALUATE, team=principal.team, model_name=name,
                         job_id=job_id)
    if job is None or (job.params or {}).get("version") != version:
        raise NotFoundError(f"evaluation '{job_id}' of model '{name}' version {version} not found")
    return job


@router.post(BASE, status_code=202, response_model=EvaluationRead, responses=ERRORS,
             summary="Queue an evaluation of this version on a labelled dataset (labels checked first: 422)")
def create_evaluation(name: str, version: Version, body: EvaluationCreate, principal: Writer, session: SessionDep,
                      storage: StorageDep, enqueue: EnqueueDep) -> JSONResponse:
    return _create(session, storage, enqueue, principal, name, get_version(session, principal, name, version), body)


@router.post("/{name}/aliases/{alias}/evaluations", status_code=202, response_model=EvaluationRead,
             responses=ERRORS, summary="Queue an evaluation of the version an alias points at (listed under it)")
def create_evaluation_by_alias(name: str, alias: Annotated[str, PathParam(pattern=ALIAS_PATTERN)],
                               body: EvaluationCreate, principal: Writer, session: SessionDep, storage: StorageDep,
                               enqueue: EnqueueDep) -> JSONResponse:
    mv = get_version(session, principal, name, None, alias)
    return _create(session, storage, enqueue, principal, name, mv, body)


def _create(session: Session, storage, enqueue, principal: Principal, name: str, mv, body: EvaluationCreate
            ) -> JSONResponse:
    from service.ml.data import encode_labels, resolve_spec
    from service.ml.spec import parse_spec

    dataset = datasets_repo.get_dataset(session=session, dataset_id=body.dataset_id, team=principal.team)
    if dataset is None:
        raise NotFoundError(f"dataset_id: dataset '{body.dataset_id}' not found")
    table = storage.load_table(dataset.id, dataset.path)
    encode_labels(resolve_spec(parse_spec(mv.spec), table), table)  # SpecError / DataError -> 422 (row, column)
    job = jobs_repo.create_job(session=session, team=principal.team, dataset_id=dataset.id, model_name=name,
                               spec={}, kind=model_jobs.EVALUATE,
                               params={"model_version_id": mv.id, "version": mv.version})
    session.commit()  # the worker must find the row: enqueue only after the commit
    try:
        enqueue(job.id)
    except Exception as exc:  # noqa: BLE001 - broker down: say so
        log.error("could not enqueue evaluation %s: %s", job.id, exc)
        jobs_repo.finish_failed(session=session, job_id=job.id, error=f"could not enqueue the job: {exc}")
        session.commit()
        raise UnavailableError(f"evaluation '{job.id}' could not be queued: the broker is unreachable") from None
    session.refresh(job)
    return JSONResponse(_read(job).model_dump(mode="json"), status_code=202)


@router.get(BASE, response_model=EvaluationList, responses=ERRORS, summary="This version's evaluations, newest first")
def list_evaluations(name: str, version: Version, principal: Reader, session: SessionDep) -> EvaluationList:
    get_version(session, principal, name, version)  # 404 for an unknown model or version
    return EvaluationList(items=[_read(j) for j in model_jobs.list_for_model(
        session=session, kind=model_jobs.EVALUATE, team=principal.team, model_name=name, version=version)])


@router.get(BASE + "/{job_id}", response_model=EvaluationRead, responses=ERRORS, summary="One evaluation")
def get_evaluation(name: str, version: Version, job_id: str, principal: Reader, session: SessionDep) -> EvaluationRead:
    return _read(_get(session, principal, name, version, job_id))


@router.get(BASE + "/{job_id}/plots/{task}.png", response_class=FileResponse,
            responses={**ERRORS, 200: {"content": {"image/png": {}}}},
            summary="Confusion matrix (classification) / predicted-vs-true (regression) of one head, end to end")
def get_evaluation_plot(name: str, version: Version, job_id: str, task: str, principal: Reader, session: SessionDep,
                        storage: StorageDep) -> FileResponse:
    job = _get(session, principal, name, version, job_id)
    heads = (job.metrics or {}).get("heads") or {}
    if job.status != JobStatus.SUCCEEDED or task not in heads:
        raise NotFoundError(f"no plot '{task}' for evaluation '{job_id}' ({job.status})")
    path = storage.results_dir(job.id) / "plots" / f"{task}.png"
    if not path.is_file():
        raise NotFoundError(f"plot '{task}' of evaluation '{job_id}' is missing on disk")
    return FileResponse(path, media_type="image/png")


@router.post(BASE + "/{job_id}/cancel", response_model=EvaluationRead, responses=ERRORS,
             summary="Cancel: queued -> cancelled (200); running -> stops at its next chunk (202); finished -> 409")
def cancel_evaluation(name: str, version: Version, job_id: str, principal: Writer, session: SessionDep) -> JSONResponse:
    job = _get(session, principal, name, version, job_id)
    code = cancel(session, job, "evaluation")
    return JSONResponse(_read(job).model_dump(mode="json"), status_code=code)
