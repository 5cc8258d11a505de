"""Registry writes: aliases (set, delete, roll back, history) and version notes / deletion.

An alias move takes the registered model's row lock (service/db/aliases.py), so racing moves serialize and the
history stays a consistent chain. Serving re-resolves names at once in this process (the resolution cache is
dropped) and within RESOLVE_TTL (1 s) in others."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam

from service.api.deps import SessionDep, StorageDep, require
from service.api.models import ERRORS as READ_ERRORS
from service.api.models import Version, get_model, get_version, version_read
from service.api.schemas import (
    ALIAS_PATTERN,
    AliasEventRead,
    AliasHistory,
    AliasRead,
    AliasSet,
    VersionRead,
    VersionUpdate,
)
from service.auth import Principal
from service.db import aliases as aliases_repo
from service.db.tables import AliasEvent
from service.errors import NotFoundError, ValidationError

router = APIRouter(prefix="/v1/models", tags=["registry"])
ERRORS = {**READ_ERRORS, 409: READ_ERRORS[404]}
Writer = Annotated[Principal, Depends(require("models:write"))]
Reader = Annotated[Principal, Depends(require("models:read"))]
AliasName = Annotated[str, PathParam(pattern=ALIAS_PATTERN, description="e.g. production; 'latest' is reserved")]


def _event(event: AliasEvent) -> AliasEventRead:
    return AliasEventRead.model_validate(event, from_attributes=True)


def _who(principal: Principal) -> tuple[str | None, str | None]:
    return principal.key_id, principal.name or None


def _moved(request: Request) -> None:
    request.app.state.predictors.forget_resolved()


def _check_alias(alias: str) -> None:
    if alias.lower() == "latest":
        raise ValidationError("alias: 'latest' is reserved (it always means the newest version)")


@router.get("/{name}/aliases", response_model=list[AliasRead], responses=READ_ERRORS, summary="A model's aliases")
def list_aliases(name: str, principal: Reader, session: SessionDep) -> list[AliasRead]:
    model = get_model(session, principal, name)
    return [AliasRead(alias=row.alias, version=number, updated_at=row.updated_at)
            for row, number in aliases_repo.list_aliases(session=session, model_id=model.id)]


@router.get("/{name}/aliases/{alias}", response_model=AliasRead, responses=READ_ERRORS, summary="One alias")
def read_alias(name: str, alias: AliasName, principal: Reader, session: SessionDep) -> AliasRead:
    model = get_model(session, principal, name)
    for row, number in aliases_repo.list_aliases(session=session, model_id=model.id):
        if row.alias == alias:
            return AliasRead(alias=row.alias, version=number, updated_at=row.updated_at)
    raise NotFoundError(f"model '{name}' has no alias '{alias}'")


@router.put("/{name}/aliases/{alias}", response_model=AliasEventRead, responses=ERRORS,
            summary="Point an alias at a version (created or moved atomically; the move is recorded)")
def set_alias(name: str, alias: AliasName, body: AliasSet, principal: Writer, session: SessionDep,
              request: Request) -> AliasEventRead:
    _check_alias(alias)
    model = get_model(session, principal, name)
    event = aliases_repo.set_alias(session=session, model_id=model.id, alias=alias, version=body.version,
                                   who=_who(principal))
    session.commit()
    _moved(request)
    return _event(event)


@router.delete("/{name}/aliases/{alias}", status_code=204, response_class=Response, responses=ERRORS,
               summary="Remove an alias (recorded in its history)")
def delete_alias(name: str, alias: AliasName, principal: Writer, session: SessionDep, request: Request) -> Response:
    model = get_model(session, principal, name)
    aliases_repo.delete_alias(session=session, model_id=model.id, alias=alias, who=_who(principal))
    session.commit()
    _moved(request)
    return Response(status_code=204)


@router.post("/{name}/aliases/{alias}/rollback", response_model=AliasEventRead, responses=ERRORS,
             summary="Move an alias back to its previous version (409 when there is none)")
def rollback_alias(name: str, alias: AliasName, principal: Writer, session: SessionDep,
                   request: Request) -> AliasEventRead:
    model = get_model(session, principal, name)
    event = aliases_repo.rollback_alias(session=session, model_id=model.id, alias=alias, who=_who(principal))
    session.commit()
    _moved(request)
    return _event(event)


@router.get("/{name}/aliases/{alias}/history", response_model=AliasHistory, responses=READ_ERRORS,
            summary="Every move of an alias, oldest first (when, by which key, from which version to which)")
def alias_history(name: str, alias: AliasName, principal: Reader, session: SessionDep) -> AliasHistory:
    model = get_model(session, principal, name)
    events = aliases_repo.alias_history(session=session, model_id=model.id, alias=alias)
    return AliasHistory(items=[_event(e) for e in events])


@router.patch("/{name}/versions/{version}", response_model=VersionRead, responses=ERRORS,
              summary="Set a version's description and/or tags")
def update_version(name: str, version: Version, body: VersionUpdate, principal: Writer,
                   session: SessionDep) -> VersionRead:
    mv = get_version(session, principal, name, version)
    aliases_repo.update_version(session=session, version=mv, changes=body.model_dump(exclude_unset=True))
    session.commit()
    return version_read(name, mv, aliases_repo.aliases_of(session=session, version_id=mv.id))


@router.delete("/{name}/versions/{version}", status_code=204, response_class=Response, responses=ERRORS,
               summary="Delete a version and its files (409 while an alias points at it; its number is not reused)")
def delete_version(name: str, version: Version, principal: Writer, session: SessionDep, storage: StorageDep,
                   request: Request) -> Response:
    model = get_model(session, principal, name)
    version_id = get_version(session, principal, name, version).id
    path = aliases_repo.delete_version(session=session, model_id=model.id, version=version)
    session.commit()
    _moved(request)
    request.app.state.predictors.discard(version_id)
    storage.remove(storage.local(path))
    storage.unpublish(path)  # object storage: its ref and the blobs nothing else names
    return Response(status_code=204)
