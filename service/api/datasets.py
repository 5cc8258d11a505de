"""Datasets: streamed upload -> validate off the event loop -> move into place -> commit; list, get, delete, audit."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api import quotas
from service.api.deps import SessionDep, SettingsDep, StorageDep, get_principal, require
from service.api.ingest import (
    DISK_FULL,
    Received,
    check_archive,
    dataset_name,
    received,
    spec_field,
    store_dataset,
    table_warnings,
    upload_allowance,
)
from service.api.schemas import AuditCreate, AuditRead, DatasetCreated, DatasetList, DatasetRead, ErrorRead
from service.auth import Principal
from service.config import Settings
from service.db import datasets as datasets_repo
from service.db import workers as workers_repo
from service.db.tables import Dataset
from service.errors import ConflictError, InsufficientStorageError, NotFoundError
from service.storage import Storage

log = logging.getLogger("headwise.api")
router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": ".zip or .npz dataset"},
                        "name": {"type": "string", "maxLength": 200},
                        "spec": {"type": "string", "description": "optional task spec (JSON text): every label "
                                 "is checked against it now (422 naming row and column)"},
                    },
                }
            }
        },
    }
}
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 409, 413, 415, 422, 507)}


def _get(session: Session, dataset_id: str, principal: Principal) -> Dataset:
    row = datasets_repo.get_dataset(session=session, dataset_id=dataset_id, team=principal.team)
    if row is None:
        raise NotFoundError(f"dataset '{dataset_id}' not found")
    return row


def _ingest(session: Session, storage: Storage, got: Received, *, settings: Settings, team: str, name: str,
            spec: dict | None) -> DatasetCreated:
    """Blocking: decode + validate the archive (and its labels against `spec`), move it into place, commit."""
    table, _resolved = check_archive(got, spec)
    row = None
    try:
        row = store_dataset(session, storage, got, table, team=team, name=name, settings=settings)
        session.commit()
    except BaseException as exc:
        session.rollback()
        if row is not None and "disk is full" in str(exc):  # SQLite in DATA_DIR: "database or disk is full"
            storage.remove_dataset(row.id)
            raise InsufficientStorageError(DISK_FULL) from None
        raise
    return DatasetCreated.model_validate(row).model_copy(update={"warnings": table_warnings(table)})


@router.post("", status_code=201, response_model=DatasetCreated, openapi_extra=UPLOAD_BODY, responses=ERRORS,
             summary="Upload a dataset (.zip or .npz), validated before it is stored (labels too, given a spec); "
                     "or, with a JSON body {\"source\": \"s3://...\"}, import it from object storage (202)")
async def upload_dataset(
    request: Request,
    principal: Annotated[Principal, Depends(require("datasets:write"))],
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> DatasetCreated:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        from service.api.imports import start_import

        return await start_import(request, principal, session)  # 202 + the import (service/api/imports.py)
    left, message = upload_allowance(request, session, storage, settings, principal.team)
    async with received(request, settings, storage, quota_left=left, quota_message=message) as got:
        name = dataset_name(got.fields.get("name"), got.filename)
        spec = spec_field(got.fields.get("spec"))
        return await run_in_threadpool(_ingest, session, storage, got, settings=settings, team=principal.team,
                                       name=name, spec=spec)


@router.get("", response_model=DatasetList, responses=ERRORS, summary="The team's datasets")
def list_datasets(
    principal: Annotated[Principal, Depends(get_principal)],
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> DatasetList:
    rows, total = datasets_repo.list_datasets(session=session, team=principal.team, limit=limit, offset=offset)
    return DatasetList(items=[DatasetRead.model_validate(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetRead, responses=ERRORS, summary="One dataset")
def get_dataset(dataset_id: str, principal: Annotated[Principal, Depends(get_principal)],
                session: SessionDep) -> DatasetRead:
    return DatasetRead.model_validate(_get(session, dataset_id, principal))


@router.delete("/{dataset_id}", status_code=204, response_class=Response, responses=ERRORS,
               summary="Delete a dataset and its files (409 while a queued or running job uses it)")
def delete_dataset(
    dataset_id: str,
    principal: Annotated[Principal, Depends(require("datasets:write"))],
    session: SessionDep,
    storage: StorageDep,
) -> Response:
    _get(session, dataset_id, principal)
    active = datasets_repo.dataset_active_jobs(session=session, dataset_id=dataset_id)
    if active:
        raise ConflictError(f"dataset '{dataset_id}' is used by queued or running job(s): {', '.join(active)}")
    datasets_repo.delete_dataset(session=session, dataset_id=dataset_id)
    session.commit()
    storage.remove_dataset(dataset_id)
    return Response(status_code=204)


@router.post("/{dataset_id}/audit", response_model=AuditRead, responses=ERRORS,
             summary="Audit a spec against the dataset (coverage, class counts, gate violations) without training")
def audit_dataset(
    dataset_id: str,
    body: AuditCreate,
    principal: Annotated[Principal, Depends(require("datasets:write", "jobs:write"))],
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> AuditRead:
    from service.ml.data import audit, resolve_spec
    from service.ml.spec import SpecError, parse_spec

    row = _get(session, dataset_id, principal)
    try:
        spec = parse_spec(body.spec)
    except SpecError as exc:  # reported, not raised: the audit is a dry run
        return AuditRead(audit=None, spec_errors=list(exc.errors), fits=False)
    table = storage.load_table(row.id, row.path)
    result = audit(spec, table)  # resolve errors land in result["spec_errors"]
    n = len(table.keys)
    try:  # estimate what job creation estimates: the spec with its classes resolved
        spec = resolve_spec(spec, table)
    except SpecError:
        pass
    memory = quotas.memory_estimate(spec, n, settings)
    memory["workers"] = workers_repo.budgets_fit(session=session, lease_seconds=settings.JOB_LEASE_SECONDS,
                                                 peak=memory["peak_bytes"])
    limit_errors: list[str] = []
    for check in (quotas.check_job_size, quotas.check_memory):  # the same checks as job creation, reported
        try:
            check(spec, n, settings)
        except SpecError as exc:
            limit_errors += exc.errors
    spec_errors = list(result["spec_errors"])
    fits = not (spec_errors or limit_errors or result["label_errors"])
    return AuditRead(audit=result, spec_errors=spec_errors, limit_errors=limit_errors, fits=fits,
                     warnings=result["findings"], memory=memory)
