"""The typed contract (issue 12): the spec in OpenAPI is the engine's own model, GET /v1/spec/schema serves it as
JSON Schema, outputs/history/metrics/columns are typed, each error status has its own example, 405 lists every
allowed method, key scopes are an enum."""

from __future__ import annotations

import jsonschema
from fastapi.testclient import TestClient

from service.ml.spec import Spec, parse_spec
from tests.api.conftest import tiny_spec


def test_spec_schema_is_the_engines_model(client: TestClient, auth) -> None:
    r = client.get("/v1/spec/schema", headers=auth)
    assert r.status_code == 200
    schema = r.json()
    assert schema["title"] == Spec.__name__ and set(schema["properties"]) == set(Spec.model_fields)
    validator = jsonschema.Draft202012Validator(schema)
    good = tiny_spec()
    assert list(validator.iter_errors(good)) == []
    parse_spec(good)  # the engine agrees
    assert list(validator.iter_errors(parse_spec(good).to_json_dict())) == []  # the stored (resolved) form too
    shorthand = {**good, "tasks": [{"name": "x", "type": "binary", "loss": "focal"}, {"name": "y", "type": "binary"}]}
    assert list(validator.iter_errors(shorthand)) == [] and parse_spec(shorthand)
    bad = {**good, "training": {**good["training"], "epochs": 0}}
    assert list(validator.iter_errors(bad))  # both reject
    assert client.get("/v1/spec/schema").status_code == 401


def test_openapi_is_typed(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    comps = doc["components"]["schemas"]
    spec_ref = {"$ref": "#/components/schemas/Spec"}
    assert comps["JobCreate"]["properties"]["spec"] == spec_ref
    assert comps["AuditCreate"]["properties"]["spec"]["anyOf"][0] == spec_ref  # or any object: errors reported
    assert comps["JobRead"]["properties"]["spec"] == spec_ref
    from service.ml.heads import HEAD_TYPES
    from service.ml.losses import loss_json_schema

    assert comps["Task"]["properties"]["type"]["enum"] == list(HEAD_TYPES)
    assert comps["Task"]["properties"]["loss"]["anyOf"][:3] == loss_json_schema()["anyOf"]  # the engine's own
    assert comps["JobRead"]["properties"]["history"]["items"] == {"$ref": "#/components/schemas/HistoryEntry"}
    assert comps["JobRead"]["properties"]["metrics"] == {"$ref": "#/components/schemas/Metrics"}
    outputs = comps["PredictRead"]["properties"]["predictions"]["items"]["additionalProperties"]["anyOf"]
    assert {o["$ref"].rsplit("/", 1)[1] for o in outputs} == {"MulticlassOutput", "BinaryOutput", "MultilabelOutput",
                                                              "RegressionOutput", "GatedOutput"}
    assert comps["DatasetRead"]["properties"]["columns"]["additionalProperties"] == {
        "$ref": "#/components/schemas/ColumnSummary"}
    assert "additionalProp1" not in str(comps["JobCreate"])
    scopes = comps["KeyCreate"]["properties"]["scopes"]["items"]["enum"]
    assert "models:write" in scopes and "admin" in scopes

    examples = {}
    for item in doc["paths"].values():
        for op in item.values():
            for status, response in op.get("responses", {}).items():
                example = response.get("content", {}).get("application/json", {}).get("example")
                if status[0] in "45" and example:
                    examples.setdefault(status, set()).add(example["error"])
    assert examples["401"] == {"Unauthorized"} and examples["404"] == {"NotFound"}
    assert examples["409"] == {"Conflict"} and examples["422"] == {"ValidationError"}
    assert examples["400"] == {"BadRequest"}
    assert "400" in doc["paths"]["/v1/keys"]["post"]["responses"]
    multipart = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart == {"$ref": "#/components/schemas/JobUpload"}
    assert set(comps["JobUpload"]["required"]) == {"file", "spec", "model_name"}


def test_405_lists_every_method(client: TestClient, auth) -> None:
    for path, allowed in (("/v1/datasets", {"GET", "POST"}), ("/v1/keys", {"GET", "POST"}),
                          ("/v1/models/m/aliases/a", {"GET", "PUT", "DELETE"}),
                          ("/v1/models/m/versions/1", {"GET", "PATCH", "DELETE"})):
        r = client.request("OPTIONS", path, headers=auth)
        assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed"
        assert set(r.headers["allow"].split(", ")) == allowed, r.headers["allow"]


def test_unparseable_body_is_documented_400(client: TestClient, auth) -> None:
    r = client.patch("/v1/models/m/versions/1", headers={**auth, "Content-Type": "application/json"},
                     content=b"\xff\xfe not json")
    assert r.status_code in (400, 404, 422) and r.json()["error"] in ("BadRequest", "NotFound", "ValidationError")
