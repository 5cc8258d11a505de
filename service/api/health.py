"""Liveness and readiness (no auth)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service.api.deps import get_broker_ping
from service.api.schemas import HealthRead, ReadyRead, WorkersAlive
from service.db import base as db
from service.db import workers as workers_repo

log = logging.getLogger("headwise.api")
router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthRead, summary="The process is alive")
def health() -> HealthRead:
    return HealthRead(status="ok")


@router.get(
    "/ready",
    response_model=ReadyRead,
    summary="Database and broker reachable (also reports how many workers are alive; never gated on them)",
    responses={503: {"model": ReadyRead, "description": "a dependency is unreachable (see checks)"}},
)
def ready(request: Request, ping_broker: Annotated[Callable[[], bool], Depends(get_broker_ping)]) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with request.app.state.sessionmaker() as session:
            db.ping(session=session)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, never raise
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        checks["broker"] = "ok" if ping_broker() else "unreachable"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    mirror = getattr(request.app.state.storage, "mirror", None)
    if mirror is not None:  # object storage configured (HEADWISE_STORAGE_URL): uploads and artifacts need it
        try:
            mirror.store.ping()
            checks["storage"] = "ok"
        except Exception as exc:  # noqa: BLE001
            log.warning("readiness: object storage unreachable: %s", exc)
            checks["storage"] = f"unreachable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    workers = _workers(request) if checks["database"] == "ok" else WorkersAlive(detail="unknown: database unreachable")
    if ok:
        return JSONResponse(ReadyRead(status="ok", checks=checks, workers=workers).model_dump(exclude_none=True))
    failed = ", ".join(f"{name} {state}" for name, state in checks.items() if state != "ok")
    body = ReadyRead(status="unavailable", checks=checks, workers=workers, error="ServiceUnavailable",
                     detail=f"not ready: {failed}")
    return JSONResponse(body.model_dump(), status_code=503)


def _workers(request: Request) -> WorkersAlive:
    """How many training workers heartbeat within the lease. Readiness never depends on it: the API serves
    predictions and accepts jobs without workers (jobs wait queued and say so), workers may start later
    (distributed mode) or be restarting (the worker supervised by `headwise serve`)."""
    lease = request.app.state.settings.JOB_LEASE_SECONDS
    try:
        with request.app.state.sessionmaker() as session:
            alive = workers_repo.count_alive(session=session, lease_seconds=lease)
    except Exception as exc:  # noqa: BLE001 - e.g. the table is missing before migrations: report, never raise
        log.warning("readiness: could not count workers: %s", exc)
        return WorkersAlive(detail=f"unknown: {type(exc).__name__}")
    if alive == 0:
        return WorkersAlive(alive=0, detail="no worker alive: queued jobs wait until one starts")
    return WorkersAlive(alive=alive, detail=f"{alive} alive (heartbeat within {lease} s)")
