"""OpenAPI additions the route decorators cannot express: request-body models referenced by hand
(`openapi_extra` bodies of routes that parse their own body) are registered under components/schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def add_models(schema: dict[str, Any], models: list[type[BaseModel]]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        body = model.model_json_schema(ref_template=REF)
        for name, sub in body.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components.setdefault(model.__name__, body)


def body_models() -> list[type[BaseModel]]:
    from service.api.one_call import JobUpload
    from service.api.schemas import JobCreate

    return [JobCreate, JobUpload]
