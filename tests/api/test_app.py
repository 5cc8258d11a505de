"""Health, readiness, the error shape everywhere, OpenAPI coverage."""

from __future__ import annotations

import pickle

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.deps import get_broker_ping
from service.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    UnavailableError,
    UnsupportedMediaError,
    ValidationError,
)
from tests.api.conftest import ADMIN_KEY, bearer

CONTRACT_PATHS = {
    "/health": {"get"},
    "/ready": {"get"},
    "/v1/datasets": {"get", "post"},
    "/v1/datasets/{dataset_id}": {"get", "delete"},
    "/v1/datasets/{dataset_id}/audit": {"post"},
    "/v1/jobs": {"get", "post"},
    "/v1/jobs/{job_id}": {"get"},
    "/v1/jobs/{job_id}/cancel": {"post"},
    "/v1/models": {"get"},
    "/v1/models/{name}": {"get"},
    "/v1/models/{name}/versions/{version}": {"get"},
    "/v1/models/{name}/versions/{version}/artifact": {"get"},
    "/v1/models/{name}/predict": {"post"},
    "/v1/keys": {"get", "post"},
    "/v1/keys/{key_id}": {"delete"},
}


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready_ok(client: TestClient) -> None:
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_ready_broker_down(app, client: TestClient) -> None:
    app.dependency_overrides[get_broker_ping] = lambda: (lambda: False)
    r = client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"] == {"database": "ok", "broker": "unreachable"}
    assert body["error"] == "ServiceUnavailable" and "broker" in body["detail"]


def test_ready_database_down(settings, tmp_path) -> None:
    bad = settings.model_copy(update={"DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/x.db"})
    app = create_app(bad)
    app.dependency_overrides[get_broker_ping] = lambda: (lambda: True)
    r = TestClient(app).get("/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["database"].startswith("unreachable")
    assert r.json()["checks"]["broker"] == "ok"
    r = TestClient(app).get("/v1/jobs", headers=bearer("hw_0123456789_" + "a" * 43))
    assert r.status_code == 503 and r.json()["error"] == "ServiceUnavailable" and r.headers["retry-after"] == "5"
    r = TestClient(app).get("/v1/jobs", headers=bearer(ADMIN_KEY))  # the admin key needs no lookup
    assert r.status_code == 503 and "database" in r.json()["detail"]


def test_unknown_route_404_shape(client: TestClient) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"error": "NotFound", "detail": "no such route"}


def test_method_not_allowed_405_shape(client: TestClient) -> None:
    r = client.put("/health")
    assert r.status_code == 405
    assert r.json()["error"] == "MethodNotAllowed"


def test_request_validation_422_names_field(client: TestClient, auth) -> None:
    r = client.post("/v1/jobs", headers=auth, json={"dataset_id": "x", "spec": {}})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "ValidationError"
    assert "body.model_name" in body["detail"]
    r = client.get("/v1/jobs?limit=0", headers=auth)
    assert r.status_code == 422 and "query.limit" in r.json()["detail"]
    r = client.get("/v1/jobs?status=bogus", headers=auth)
    assert r.status_code == 422 and "query.status" in r.json()["detail"]


def test_invalid_json_body_422(client: TestClient, auth) -> None:
    r = client.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=b"{nope")
    assert r.status_code == 422 and r.json()["error"] == "ValidationError"


def test_unhandled_exception_500_shape(settings, caplog) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": "InternalError", "detail": "internal server error; see the server log"}
    assert "secret internals" not in r.text
    assert any("unhandled error" in rec.message for rec in caplog.records)


@pytest.mark.parametrize(
    ("cls", "status", "kind"),
    [(NotFoundError, 404, "NotFound"), (ConflictError, 409, "Conflict"), (PayloadTooLargeError, 413, "PayloadTooLarge"),
     (UnsupportedMediaError, 415, "UnsupportedMediaType"), (ValidationError, 422, "ValidationError"),
     (AuthError, 401, "Unauthorized"), (ForbiddenError, 403, "Forbidden"), (UnavailableError, 503, "ServiceUnavailable")],
)
def test_error_classes_pickle_and_render(cls, status, kind) -> None:
    exc = pickle.loads(pickle.dumps(cls("what and where")))
    assert (exc.status_code, exc.kind, str(exc)) == (status, kind, "what and where")
    custom = pickle.loads(pickle.dumps(ServiceError("x", 418, "Teapot")))
    assert (custom.status_code, custom.kind) == (418, "Teapot")


def test_openapi_has_every_contract_path(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, methods in CONTRACT_PATHS.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, spec["paths"][path].keys())
    upload = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    predict = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(predict)
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "HTTPValidationError" not in str(spec)  # 422 bodies are {"error", "detail"} like every error
    assert client.get("/docs").status_code == 200


def test_error_shape_on_auth_failures(client: TestClient) -> None:
    r = client.get("/v1/datasets")
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/v1/datasets", headers=bearer("hw_nope"))
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
