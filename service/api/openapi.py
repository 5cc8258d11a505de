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
        for name, sub in admit_shorthands(body.pop("$defs", {})).items():
            components.setdefault(name, sub)
        components.setdefault(model.__name__, body)


def link_spec(node: Any) -> Any:
    """Replace every schema marked SPEC_MARK (schemas.SpecJson) by a reference to the engine's Spec."""
    from service.api.schemas import SPEC_MARK

    if isinstance(node, dict):
        if node.get(SPEC_MARK) == "audit":
            return {"anyOf": [{"$ref": REF.format(model="Spec")},
                              {"type": "object", "description": "any other object: its errors are listed in "
                                                                "spec_errors (200), not refused"}]}
        if node.get(SPEC_MARK):
            return {"$ref": REF.format(model="Spec")}
        return {k: link_spec(v) for k, v in node.items()}
    if isinstance(node, list):
        return [link_spec(v) for v in node]
    return node


def body_models() -> list[type[BaseModel]]:
    from service.api.one_call import JobUpload
    from service.api.schemas import JobCreate

    return [spec_model(), JobCreate, JobUpload]


ERROR_EXAMPLES: dict[str, tuple[str, str, str]] = {  # status -> (description, error kind, detail)
    "400": ("The body could not be parsed", "BadRequest", "There was an error parsing the body"),
    "401": ("No, an invalid or a revoked API key", "Unauthorized", "missing API key: send Authorization: Bearer <key>"),
    "403": ("The key lacks the scope", "Forbidden", "this API key lacks the scope 'models:write'"),
    "404": ("Not found (or another team's)", "NotFound", "model 'shapes' not found"),
    "409": ("Conflicts with the resource's state", "Conflict",
            "version 3 is the target of alias(es) production; move them first"),
    "413": ("Too large", "PayloadTooLarge", "file 'big.zip' is larger than the limit of 2147483648 bytes"),
    "415": ("Unsupported media type", "UnsupportedMediaType", "file: 'data.txt' is not a .zip or .npz archive"),
    "422": ("Invalid input, naming the field, row or column", "ValidationError",
            "labels.csv row 3, column 'size': 'abc' is not a number"),
    "429": ("Too many requests", "TooManyRequests", "quota exceeded; retry later"),
    "503": ("A dependency is down or the server is overloaded; retry", "ServiceUnavailable",
            "the database is unavailable; try again shortly"),
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorRead"}


def document_errors(schema: dict[str, Any]) -> None:
    """Each error status gets its own description and example; operations with a body also document 400 (a
    body that cannot be parsed at all)."""
    for operations in schema.get("paths", {}).values():
        for op in operations.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            if "requestBody" in op and "400" not in responses:
                responses["400"] = {"content": {"application/json": {"schema": dict(ERROR_REF)}}}
            for status, response in responses.items():
                if status not in ERROR_EXAMPLES or "ErrorRead" not in str(response.get("content")):
                    continue
                description, kind, detail = ERROR_EXAMPLES[status]
                response["description"] = description
                media = response.setdefault("content", {}).setdefault("application/json", {})
                media["schema"] = dict(ERROR_REF)
                media["example"] = {"error": kind, "detail": detail}


def admit_shorthands(defs: dict[str, Any]) -> dict[str, Any]:
    """The engine's Task and Weighting take their allowed values from registries (head types, losses,
    weighting strategies) at validation time, so the generated schema says only "string" / "any": fill in the
    registries' values and the engine's own loss schema (losses.loss_json_schema), so that the schema admits
    what parse_spec accepts and names what it allows."""
    from service.ml.heads import HEAD_TYPES
    from service.ml.losses import loss_json_schema
    from service.ml.weighting import STRATEGIES

    task = defs.get("Task", {}).get("properties", {})
    if "type" in task:
        task["type"] = {**task["type"], "enum": list(HEAD_TYPES), "description": "a registered head type"}
    if "loss" in task:
        task["loss"] = {"anyOf": [*loss_json_schema()["anyOf"], {"type": "null"}],
                        "description": "a loss name, a loss object (its `type` picks the fields), a list of them "
                                       "(summed, each with its `weight`), or null for the head type's default"}
    weighting = defs.get("Weighting", {}).get("properties", {})
    if "strategy" in weighting:
        weighting["strategy"] = {**weighting["strategy"], "enum": list(STRATEGIES)}
    return defs


def spec_json_schema() -> dict[str, Any]:
    """GET /v1/spec/schema: the engine's spec model as a standalone JSON Schema."""
    schema = spec_model().model_json_schema()
    admit_shorthands(schema.get("$defs", {}))
    return schema


def spec_model() -> type[BaseModel]:
    """THE engine's spec model (the one parse_spec validates with): OpenAPI and GET /v1/spec/schema show it."""
    from service.ml.spec import Spec

    return Spec


# OpenAPI links: from each create operation to the reads of what it created, from each list to its first item, and
# from a job to its model version and to queueing the same job again (clients and the schemathesis stateful phase
# follow them). (from path, method, status) -> [(to path, method, {parameter: runtime expression}[, requestBody])]
ID = "$response.body#/id"
FIRST = "$response.body#/items/0"
LINKS: dict[tuple[str, str, str], list[tuple]] = {
    ("/v1/datasets", "get", "200"): [
        ("/v1/datasets/{dataset_id}", "get", {"dataset_id": f"{FIRST}/id"}),
        ("/v1/datasets/{dataset_id}/audit", "post", {"dataset_id": f"{FIRST}/id"}),
    ],
    ("/v1/jobs", "get", "200"): [("/v1/jobs/{job_id}", "get", {"job_id": f"{FIRST}/id"})],
    ("/v1/jobs/{job_id}", "get", "200"): [
        ("/v1/models/{name}/versions/{version}", "get",
         {"name": "$response.body#/model/name", "version": "$response.body#/model/version"}),
        ("/v1/datasets/{dataset_id}", "get", {"dataset_id": "$response.body#/dataset_id"}),
        ("/v1/jobs", "post", {}, {"dataset_id": "$response.body#/dataset_id",
                                  "model_name": "$response.body#/model_name", "spec": "$response.body#/spec"}),
    ],
    ("/v1/models", "get", "200"): [
        ("/v1/models/{name}", "get", {"name": f"{FIRST}/name"}),
        ("/v1/models/{name}/versions/{version}", "get",
         {"name": f"{FIRST}/name", "version": f"{FIRST}/latest_version"}),
    ],
    ("/v1/datasets", "post", "201"): [
        ("/v1/datasets/{dataset_id}", "get", {"dataset_id": ID}),
        ("/v1/datasets/{dataset_id}/audit", "post", {"dataset_id": ID}),
        ("/v1/datasets/{dataset_id}", "delete", {"dataset_id": ID}),
    ],
    ("/v1/jobs", "post", "202"): [
        ("/v1/jobs/{job_id}", "get", {"job_id": ID}),
        ("/v1/jobs/{job_id}/cancel", "post", {"job_id": ID}),
        ("/v1/datasets/{dataset_id}", "get", {"dataset_id": "$response.body#/dataset_id"}),
    ],
    ("/v1/keys", "post", "201"): [("/v1/keys/{key_id}", "delete", {"key_id": ID})],
    ("/v1/models/{name}/aliases/{alias}", "put", "200"): [
        ("/v1/models/{name}", "get", {"name": "$request.path.name"}),
        ("/v1/models/{name}/aliases/{alias}", "get", {"name": "$request.path.name", "alias": "$request.path.alias"}),
        ("/v1/models/{name}/aliases/{alias}/history", "get",
         {"name": "$request.path.name", "alias": "$request.path.alias"}),
        ("/v1/models/{name}/versions/{version}", "get",
         {"name": "$request.path.name", "version": "$response.body#/to_version"}),
        ("/v1/models/{name}/aliases/{alias}/rollback", "post",
         {"name": "$request.path.name", "alias": "$request.path.alias"}),
    ],
    ("/v1/models/{name}/versions/{version}", "patch", "200"): [
        ("/v1/models/{name}/versions/{version}", "get",
         {"name": "$request.path.name", "version": "$request.path.version"}),
    ],
}


def add_links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    for (path, method, status), targets in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for to_path, to_method, parameters, *body in targets:
            target = paths.get(to_path, {}).get(to_method)
            if target and "operationId" in target:
                link: dict[str, Any] = {"operationId": target["operationId"]}
                if parameters:
                    link["parameters"] = parameters
                if body:
                    link["requestBody"] = body[0]
                links[target["operationId"]] = link
