"""API key management (scope admin). Admin keys manage their own team's keys; the HEADWISE_ADMIN_KEY
principal (root) may manage every team's keys and create keys for other teams."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.api.deps import SessionDep, get_authenticator, require
from service.api.schemas import ErrorRead, KeyCreate, KeyCreated, KeyList, KeyRead
from service.auth import KeyAuthenticator, Principal, check_scopes, create_key
from service.db import keys as keys_repo
from service.db.tables import utcnow
from service.errors import ForbiddenError, NotFoundError, ValidationError

router = APIRouter(prefix="/v1/keys", tags=["keys"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 404, 422)}
Admin = Annotated[Principal, Depends(require("admin"))]
AuthDep = Annotated[KeyAuthenticator, Depends(get_authenticator)]


@router.get("", response_model=KeyList, responses=ERRORS, summary="API keys of the caller's team (root: all)")
def list_keys(principal: Admin, session: SessionDep) -> KeyList:
    rows = keys_repo.list_api_keys(session=session, team=None if principal.root else principal.team)
    return KeyList(items=[KeyRead.model_validate(r) for r in rows])


@router.post("", status_code=201, response_model=KeyCreated, responses=ERRORS,
             summary="Create an API key; the key itself is returned only in this response")
def create_api_key(body: KeyCreate, principal: Admin, session: SessionDep,
                   authenticator: AuthDep) -> JSONResponse:
    team = body.team or principal.team
    if team != principal.team and not principal.root:
        raise ForbiddenError(f"team: an admin key of team '{principal.team}' can only create keys for that team")
    try:
        scopes = check_scopes(body.scopes)
    except ValueError as exc:
        raise ValidationError(f"scopes: {exc}") from None
    row, key = create_key(session, authenticator.secret, name=body.name, team=team, scopes=scopes)
    session.commit()
    body_out = KeyCreated.model_validate({**KeyRead.model_validate(row).model_dump(), "key": key})
    return JSONResponse(body_out.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"})


@router.delete("/{key_id}", response_model=KeyRead, responses=ERRORS,
               summary="Revoke a key (effective at once in this process, within seconds everywhere)")
def revoke_key(key_id: str, principal: Admin, session: SessionDep, authenticator: AuthDep) -> KeyRead:
    row = keys_repo.get_api_key(session=session, key_id=key_id, team=None if principal.root else principal.team)
    if row is None:
        raise NotFoundError(f"API key '{key_id}' not found")
    keys_repo.revoke_api_key(session=session, key=row, when=utcnow())
    session.commit()
    authenticator.invalidate(row.id)
    return KeyRead.model_validate(row)
