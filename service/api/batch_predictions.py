"""Batch prediction: a model version over a whole stored dataset, run by the workers as a job (kind
"batch_predict": same claim, lease, reaper and cancel as training) -> results.jsonl and results.csv.

  POST /v1/models/{name}/batch-predictions {"dataset_id", "version"? | "alias"?}  202, scope predict
  GET  /v1/models/{name}/batch-predictions[/{id}]                          scope predict or models:read
  GET  /v1/models/{name}/batch-predictions/{id}/results.jsonl|results.csv  409 until it succeeded
  POST /v1/models/{name}/batch-predictions/{id}/cancel                     scope predict
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.deps import EnqueueDep, SessionDep, SettingsDep, StorageDep, require
from service.api.errors import validation_detail
from service.api.models import get_version
from service.api.predict import _read_capped
from service.api.schemas import (
    ALIAS_PATTERN,
    BatchPredictionCreate,
    BatchPredictionList,
    BatchPredictionRead,
    ErrorRead,
    ModelRef,
)
from service.api.uploads import FileSink, StreamingForm, check_content_length
from service.auth import Principal
from service.db import datasets as datasets_repo
from service.db import jobs as jobs_repo
from service.db import model_jobs
from service.db.base import new_id
from service.db.tables import Job, utcnow
from service.domain import ACTIVE_STATUSES, JobStatus
from service.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    UnsupportedMediaError,
    ValidationError,
)

log = logging.getLogger("headwise.api")
router = APIRouter(prefix="/v1/models", tags=["batch predictions"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 409, 422, 503)}
Predictor = Annotated[Principal, Depends(require("predict"))]
Reader = Annotated[Principal, Depends(require("predict", "models:read"))]
FORM_OVERHEAD = 1024 * 1024  # multipart headers and text fields on top of the file cap
JSON_CAP = 64 * 1024
MEDIA = {"results.jsonl": "application/x-ndjson", "results.csv": "text/csv"}


def _read(job: Job) -> BatchPredictionRead:
    base = f"/v1/models/{job.model_name}/batch-predictions/{job.id}"
    done = job.status == JobStatus.SUCCEEDED
    return BatchPredictionRead(
        id=job.id, model=ModelRef(name=job.model_name, version=(job.params or {}).get("version", 0)),
        dataset_id=job.dataset_id, status=job.status, fraction=float((job.progress or {}).get("fraction", 0.0)),
        images=(job.metrics or {}).get("images"), error=job.error, cancel_requested=bool(job.cancel_requested),
        results={name: f"{base}/{name}" for name in MEDIA} if done else None,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at)


def _get(session: Session, principal: Principal, name: str, job_id: str) -> Job:
    job = model_jobs.get(session=session, kind=model_jobs.BATCH_PREDICT, team=principal.team, model_name=name,
                         job_id=job_id)
    if job is None:
        raise NotFoundError(f"batch prediction '{job_id}' of model '{name}' not found")
    return job


CREATE_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["dataset_id"], "properties": {
        "dataset_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "alias": {"type": "string", "pattern": ALIAS_PATTERN}}}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a zip of PNG/JPEG images, no labels"},
        "version": {"type": "integer", "minimum": 1}}}},
}}, "security": [{"HTTPBearer": []}]}


@router.post("/{name}/batch-predictions", status_code=202, response_model=BatchPredictionRead,
             responses={**ERRORS, 413: {"model": ErrorRead}, 415: {"model": ErrorRead}}, openapi_extra=CREATE_OPENAPI,
             summary="Queue a batch prediction: JSON {dataset_id} of a stored dataset, or multipart `file` = a zip "
                     "of images without labels (one call)")
async def create_batch_prediction(name: str, request: Request, principal: Predictor, settings: SettingsDep,
                                  storage: StorageDep, enqueue: EnqueueDep) -> JSONResponse:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        upload, version = await read_images_zip(request, storage, settings.MAX_UPLOAD_BYTES)
        dataset_id = alias = None
    elif ctype == "application/json":
        body = await _json_body(request)
        upload, version, dataset_id, alias = None, body.version, body.dataset_id, body.alias
        if version is not None and alias is not None:
            raise ValidationError("body: version and alias are mutually exclusive: give at most one")
    else:
        raise UnsupportedMediaError("send JSON {\"dataset_id\"} or multipart/form-data with a zip as 'file'")
    try:
        job = await run_in_threadpool(_create, request.app.state.sessionmaker, principal, name, (version, alias),
                                      dataset_id, upload, storage)
    finally:
        if upload is not None:
            storage.remove(upload[0])  # moved into place on success
    try:
        enqueue(job.id)
    except Exception as exc:  # noqa: BLE001 - broker down: say so
        log.error("could not enqueue batch prediction %s: %s", job.id, exc)
        with request.app.state.sessionmaker() as session:
            jobs_repo.finish_failed(session=session, job_id=job.id, error=f"could not enqueue the job: {exc}")
            session.commit()
        raise UnavailableError(f"batch prediction '{job.id}' could not be queued: the broker is unreachable") from None
    return JSONResponse(_read(job).model_dump(mode="json"), status_code=202)


async def _json_body(request: Request) -> BatchPredictionCreate:
    check_content_length(request.headers.get("content-length"), JSON_CAP)
    raw = await _read_capped(request, JSON_CAP)
    try:
        return BatchPredictionCreate.model_validate_json(raw)
    except PydanticValidationError as exc:
        raise ValidationError(validation_detail([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])) from None


def _create(sessionmaker, principal: Principal, name: str, which: tuple[int | None, str | None], dataset_id: str | None,
            upload: tuple[Path, str] | None, storage) -> Job:
    """validate -> row -> COMMIT (the uploaded zip moved into place first; removed again if the commit fails)."""
    with sessionmaker() as session:
        mv = get_version(session, principal, name, *which)
        params: dict = {"model_version_id": mv.id, "version": mv.version}
        if dataset_id is not None:
            dataset = datasets_repo.get_dataset(session=session, dataset_id=dataset_id, team=principal.team)
            if dataset is None:
                raise NotFoundError(f"dataset_id: dataset '{dataset_id}' not found")
        final = None
        if upload is not None:
            final = storage.root / "batch-inputs" / f"{new_id()}.zip"
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(upload[0], final)
            params |= {"input": storage.rel(final), "filename": upload[1]}
        try:
            job = jobs_repo.create_job(session=session, team=principal.team, dataset_id=dataset_id, model_name=name,
                                       spec={}, kind=model_jobs.BATCH_PREDICT, params=params)
            session.commit()  # the worker must find the row: enqueue only after the commit
        except BaseException:
            storage.remove(final)
            raise
        session.refresh(job)
        session.expunge(job)
        return job


async def read_images_zip(request: Request, storage, cap: int) -> tuple[tuple[Path, str], int | None]:
    """Stream the multipart `file` (a zip of images) to tmp/ and check it (zip limits, images only) -> 422/413/415;
    nothing is left behind on error."""
    from service.serving.batch_input import unlabelled_table

    check_content_length(request.headers.get("content-length"), cap + FORM_OVERHEAD)
    sinks: list[FileSink] = []

    def open_file(field: str, filename: str, _ctype: str) -> FileSink:
        if field != "file" or sinks:
            raise ValidationError(f"unexpected file field '{field}': send exactly one zip of images as 'file'")
        if not filename.lower().endswith(".zip"):
            raise UnsupportedMediaError(f"file: '{filename}' is not a .zip of images")
        sinks.append(FileSink(storage.new_tmp_path(".zip"), cap, label=f"file '{filename}'"))
        return sinks[-1]

    form = StreamingForm(request.headers.get("content-type", ""), open_file)
    try:
        await form.consume(request.stream(), cap + FORM_OVERHEAD)
        if not form.files:
            raise ValidationError("file: field required (a zip of PNG/JPEG images)")
        raw_version = (form.fields.get("version") or "").strip()
        if raw_version and not (raw_version.isdigit() and 1 <= int(raw_version) < 2**31):
            raise ValidationError(f"version: {raw_version!r} is not a positive integer")
        filename = form.files[0][1]
        await run_in_threadpool(unlabelled_table, sinks[0].path, filename)  # DataError -> 422 naming the entry
        return (sinks[0].path, filename), int(raw_version) if raw_version else None
    except BaseException:
        for sink in sinks:
            storage.remove(sink.path)
        raise
    finally:
        form.close_all()


@router.get("/{name}/batch-predictions", response_model=BatchPredictionList, responses=ERRORS,
            summary="The model's batch predictions, newest first")
def list_batch_predictions(name: str, principal: Reader, session: SessionDep) -> BatchPredictionList:
    return BatchPredictionList(items=[_read(j) for j in model_jobs.list_for_model(
        session=session, kind=model_jobs.BATCH_PREDICT, team=principal.team, model_name=name)])


@router.get("/{name}/batch-predictions/{job_id}", response_model=BatchPredictionRead, responses=ERRORS,
            summary="One batch prediction: status, progress, result URLs")
def get_batch_prediction(name: str, job_id: str, principal: Reader, session: SessionDep) -> BatchPredictionRead:
    return _read(_get(session, principal, name, job_id))


def _results(name: str, job_id: str, filename: str, principal: Principal, session: Session, storage) -> FileResponse:
    job = _get(session, principal, name, job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise ConflictError(f"batch prediction '{job_id}' is {job.status}; results exist once it succeeded")
    path = storage.results_dir(job.id) / filename
    if not path.is_file():
        raise NotFoundError(f"{filename} of batch prediction '{job_id}' is missing on disk")
    return FileResponse(path, media_type=MEDIA[filename], filename=f"{name}-{job_id}-{filename}")


@router.get("/{name}/batch-predictions/{job_id}/results.jsonl", response_class=FileResponse,
            responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}}},
            summary="results.jsonl: one line per image (path + every head), streamed from disk; 409 until succeeded")
def get_results_jsonl(name: str, job_id: str, principal: Reader, session: SessionDep,
                      storage: StorageDep) -> FileResponse:
    return _results(name, job_id, "results.jsonl", principal, session, storage)


@router.get("/{name}/batch-predictions/{job_id}/results.csv", response_class=FileResponse,
            responses={**ERRORS, 200: {"content": {"text/csv": {}}}},
            summary="results.csv: one row per image, one column per head field; 409 until succeeded")
def get_results_csv(name: str, job_id: str, principal: Reader, session: SessionDep,
                    storage: StorageDep) -> FileResponse:
    return _results(name, job_id, "results.csv", principal, session, storage)


@router.post("/{name}/batch-predictions/{job_id}/cancel", response_model=BatchPredictionRead,
             responses={**ERRORS, 202: {"model": BatchPredictionRead, "description": "running: it stops soon"}},
             summary="Cancel: queued -> cancelled (200); running -> stops at its next chunk (202); finished -> 409")
def cancel_batch_prediction(name: str, job_id: str, principal: Predictor, session: SessionDep) -> JSONResponse:
    job = _get(session, principal, name, job_id)
    code = cancel(session, job, "batch prediction")
    return JSONResponse(_read(job).model_dump(mode="json"), status_code=code)


def cancel(session: Session, job: Job, what: str) -> int:
    """queued -> cancelled (200); running -> cancel requested, it stops at its next chunk (202); finished -> 409."""
    if job.status == JobStatus.QUEUED and jobs_repo.cancel_queued_job(session=session, job_id=job.id, when=utcnow()):
        code = 200
    elif jobs_repo.request_job_cancel(session=session, job_id=job.id):
        code = 202
    else:
        session.refresh(job)
        if job.status in ACTIVE_STATUSES:  # pragma: no cover - lost a race twice
            raise ConflictError(f"{what} '{job.id}' changed state while cancelling; try again")
        raise ConflictError(f"{what} '{job.id}' already finished ({job.status}); nothing to cancel")
    session.commit()
    session.refresh(job)
    return code
