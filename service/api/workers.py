"""GET /v1/workers (scope admin): the training workers registered in the database, alive or recently dead.

A worker is alive while it heartbeats within HEADWISE_JOB_LEASE_SECONDS (service/db/workers.py). Workers serve
every team; the job each one runs is shown only to that job's team (and to the HEADWISE_ADMIN_KEY principal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.api.deps import SessionDep, SettingsDep, require
from service.api.schemas import ErrorRead, WorkerList, WorkerRead
from service.auth import Principal
from service.db import workers as workers_repo

router = APIRouter(prefix="/v1/workers", tags=["workers"])
ERRORS = {code: {"model": ErrorRead} for code in (401, 403, 503)}


@router.get("", response_model=WorkerList, responses=ERRORS,
            summary="Training workers: host, pid, queues, device, current job, last seen, alive")
def list_workers(principal: Annotated[Principal, Depends(require("admin"))], session: SessionDep,
                 settings: SettingsDep) -> WorkerList:
    lease = settings.JOB_LEASE_SECONDS
    items = []
    for row in workers_repo.list_workers(session=session, lease_seconds=lease):
        team = row.pop("current_job_team")
        if team != principal.team and not principal.root:
            row["current_job"] = None
        items.append(WorkerRead(**row))
    return WorkerList(items=items, alive=sum(w.alive for w in items), lease_seconds=lease)
