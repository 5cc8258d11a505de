"""GET /v1/spec/schema: the task spec's JSON Schema, generated from the engine's own model (the one
parse_spec validates with), so clients can validate and autocomplete specs offline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import PrincipalDep
from service.api.openapi import spec_json_schema
from service.api.schemas import ErrorRead

router = APIRouter(prefix="/v1/spec", tags=["spec"])


@router.get("/schema", responses={401: {"model": ErrorRead}},
            summary="The task spec as JSON Schema (tasks, losses, gates, weighting, model, training)")
def spec_schema(_principal: PrincipalDep) -> dict[str, Any]:
    return spec_json_schema()
