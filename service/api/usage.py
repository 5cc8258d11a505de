"""GET /v1/usage: a team's use of its quotas (active jobs, stored bytes) and the limits that apply to it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.api import quotas
from service.api.deps import SessionDep, SettingsDep, StorageDep, get_principal
from service.api.schemas import ErrorRead, UsageRead
from service.auth import Principal

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", response_model=UsageRead, responses={401: {"model": ErrorRead}},
            summary="The team's use and limits: active jobs, stored bytes (datasets + artifacts), per-job limits")
def get_usage(principal: Annotated[Principal, Depends(get_principal)], session: SessionDep,
              storage: StorageDep, settings: SettingsDep) -> UsageRead:
    return UsageRead.model_validate(quotas.usage(session, storage, settings, principal.team))
