"""Liveness and readiness (no auth)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service.api.deps import get_broker_ping
from service.api.schemas import HealthRead, ReadyRead
from service.db import base as db

log = logging.getLogger("headwise.api")
router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthRead, summary="The process is alive")
def health() -> HealthRead:
    return HealthRead(status="ok")


@router.get(
    "/ready",
    response_model=ReadyRead,
    summary="Database and broker reachable",
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
    ok = all(v == "ok" for v in checks.values())
    if ok:
        return JSONResponse(ReadyRead(status="ok", checks=checks).model_dump(exclude_none=True))
    failed = ", ".join(f"{name} {state}" for name, state in checks.items() if state != "ok")
    body = ReadyRead(status="unavailable", checks=checks, error="ServiceUnavailable", detail=f"not ready: {failed}")
    return JSONResponse(body.model_dump(), status_code=503)
