"""Datasets: streamed upload -> validate off the event loop -> move into place -> commit; list, get, delete, audit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.deps import SessionDep, SettingsDep, StorageDep, get_principal, require
from service.api.schemas import AuditCreate, AuditRead, DatasetCreated, DatasetList, DatasetRead, ErrorRead
from service.api.uploads import FileSink, StreamingForm, check_content_length
from service.auth import Principal
from service.db import datasets as datasets_repo
from service.db.tables import Dataset, new_id
from service.errors import ConflictError, NotFoundError, UnsupportedMediaError, ValidationError
from service.storage import Storage

log = logging.getLogger("headwise.api")
router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

FORMATS = {".zip": "zip", ".npz": "npz"}
FORM_OVERHEAD = 1024 * 1024  # multipart headers and text fields on top of the file cap
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
                    },
                }
            }
        },
    }
}
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 409, 413, 415, 422)}


def _get(session: Session, dataset_id: str, principal: Principal) -> Dataset:
    row = datasets_repo.get_dataset(session=session, dataset_id=dataset_id, team=principal.team)
    if row is None:
        raise NotFoundError(f"dataset '{dataset_id}' not found")
    return row


def _ingest(session: Session, storage: Storage, tmp: Path, *, team: str, name: str, filename: str,
            fmt: str, size: int, sha256: str) -> DatasetCreated:
    """Blocking: decode + validate the archive, move it into datasets/<id>/ and commit the row."""
    from service.ml.data import DataError, read_table, summarize, verify_images

    try:
        table = read_table(tmp)
        verify_images(tmp, table)  # decode every image: truncated/undecodable files are rejected now, not in training
    except DataError as exc:  # name the uploaded file, not the temporary one
        raise DataError(str(exc).replace(tmp.name, filename)) from None
    if table.source == tmp.name:
        table.source = filename
    columns = summarize(table)
    dataset_id = new_id()
    final = storage.dataset_dir(dataset_id) / f"dataset.{fmt}"
    try:
        storage.move_into(tmp, final)
        storage.save_table(dataset_id, table)
        row = datasets_repo.insert_dataset(
            session=session, id=dataset_id, team=team, name=name, format=fmt, filename=filename,
            num_samples=len(table.keys), columns=columns, size_bytes=size, sha256=sha256, path=storage.rel(final),
        )
        session.commit()
    except BaseException:
        session.rollback()
        storage.remove_dataset(dataset_id)
        raise
    warnings = [str(w) for w in getattr(table, "warnings", None) or []]
    return DatasetCreated.model_validate(row).model_copy(update={"warnings": warnings})


@router.post("", status_code=201, response_model=DatasetCreated, openapi_extra=UPLOAD_BODY, responses=ERRORS,
             summary="Upload a dataset (.zip or .npz), validated before it is stored")
async def upload_dataset(
    request: Request,
    principal: Annotated[Principal, Depends(require("datasets:write"))],
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> DatasetCreated:
    cap = settings.MAX_UPLOAD_BYTES
    check_content_length(request.headers.get("content-length"), cap + FORM_OVERHEAD)
    tmp_paths: list[Path] = []

    def open_file(field: str, filename: str, _ctype: str) -> FileSink:
        if field != "file":
            raise ValidationError(f"unexpected file field '{field}': send the archive as 'file'")
        if tmp_paths:
            raise ValidationError("file: send exactly one archive")
        suffix = Path(filename).suffix.lower()
        if suffix not in FORMATS:
            raise UnsupportedMediaError(f"file: '{filename}' is not a .zip or .npz archive")
        tmp_paths.append(storage.new_tmp_path(suffix))
        return FileSink(tmp_paths[-1], cap, label=f"file '{filename}'")

    form = StreamingForm(request.headers.get("content-type", ""), open_file)
    try:
        await form.consume(request.stream(), cap + FORM_OVERHEAD)
        if not form.files:
            raise ValidationError("file: field required (a .zip or .npz archive)")
        _field, filename, sink = form.files[0]
        assert isinstance(sink, FileSink)
        name = (form.fields.get("name") or "").strip() or Path(filename).stem or "dataset"
        if len(name) > 200:
            raise ValidationError("name: at most 200 characters")
        return await run_in_threadpool(
            _ingest, session, storage, sink.path, team=principal.team, name=name, filename=Path(filename).name,
            fmt=FORMATS[sink.path.suffix], size=sink.size, sha256=sink.sha256,
        )
    finally:  # success moved the file away; any failure leaves nothing behind
        form.close_all()
        for path in tmp_paths:
            storage.remove(path)


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
) -> AuditRead:
    from service.ml.data import audit
    from service.ml.spec import SpecError, parse_spec

    row = _get(session, dataset_id, principal)
    try:
        spec = parse_spec(body.spec)
    except SpecError as exc:  # reported, not raised: the audit is a dry run
        return AuditRead(audit=None, spec_errors=list(exc.errors))
    result = audit(spec, storage.load_table(row.id, row.path))  # resolve errors land in result["spec_errors"]
    return AuditRead(audit=result, spec_errors=list(result.get("spec_errors", [])))
