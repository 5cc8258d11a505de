"""GET /v1/capabilities: the engine's head types, losses (incl. `headwise.losses` plugins) and weighting
strategies with their parameters, listed by the engine itself (service.ml.capabilities)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import PrincipalDep
from service.api.schemas import ErrorRead

router = APIRouter(prefix="/v1", tags=["spec"])


@router.get("/capabilities", responses={401: {"model": ErrorRead}},
            summary="Head types, losses (built-in and plugins) and weighting strategies with their parameters")
def capabilities(_principal: PrincipalDep) -> dict[str, Any]:
    from service.ml.capabilities import capabilities as engine_capabilities

    return engine_capabilities()
