"""Datasets imported from object storage: `POST /v1/datasets` with a JSON body {"source": "s3://..."} (202; a
worker downloads and validates it with the same checks and errors as an upload) and
`GET /v1/datasets/imports/{id}` (status, progress, error, the dataset id once done)."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError as PydanticValidationError

from service.api import quotas
from service.api.deps import SessionDep, get_principal
from service.api.schemas import ErrorRead, ImportCreate, ImportRead
from service.auth import Principal
from service.db import imports as imports_repo
from service.errors import NotFoundError, UnavailableError, UnsupportedMediaError, ValidationError
from service.storage.sources import check_source

log = logging.getLogger("headwise.api")
router = APIRouter(prefix="/v1/datasets/imports", tags=["datasets"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 422, 503)}


async def start_import(request: Request, principal: Principal, session) -> JSONResponse:
    """The JSON form of POST /v1/datasets (the route checked the scope)."""
    from service.queue import enqueue_import

    try:
        raw = json.loads(await request.body() or b"null")
    except json.JSONDecodeError as exc:
        raise ValidationError(f"body: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or "source" not in raw:  # not an import: a misdirected upload
        raise UnsupportedMediaError("send the archive as multipart/form-data field 'file', or JSON "
                                    '{"source": "s3://bucket/prefix/"} to import it from object storage')
    try:
        body = ImportCreate.model_validate(raw)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        raise ValidationError(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}") from None
    settings = request.app.state.settings
    check_source(body.source, settings.IMPORT_ALLOWED_PREFIXES)
    # the size is known only once a worker lists the source: refuse now when not even a byte fits (413, as an
    # upload); the worker checks the real size against what is left before downloading
    quotas.check_storage(session, request.app.state.storage, settings, principal.team, incoming=1,
                         what="a new import")
    row = imports_repo.create_import(session=session, team=principal.team, source=body.source, name=body.name,
                                     spec=body.spec)
    session.commit()
    try:
        enqueue_import(row.id)
    except Exception as exc:  # noqa: BLE001 - broker down
        log.error("could not enqueue import %s: %s", row.id, exc)
        imports_repo.finish(session=session, import_id=row.id, status="failed", error=f"could not enqueue: {exc}")
        session.commit()
        raise UnavailableError(f"import '{row.id}' could not be queued: the broker is unreachable") from None
    session.refresh(row)
    return JSONResponse(ImportRead.model_validate(row).model_dump(mode="json"), status_code=202)


@router.get("/{import_id}", response_model=ImportRead, responses=ERRORS,
            summary="A dataset import from object storage: status, progress, error, dataset_id once done")
def get_import(import_id: str, principal: Annotated[Principal, Depends(get_principal)],
               session: SessionDep) -> ImportRead:
    row = imports_repo.get_team_import(session=session, import_id=import_id, team=principal.team)
    if row is None:
        raise NotFoundError(f"import '{import_id}' not found")
    return ImportRead.model_validate(row)
