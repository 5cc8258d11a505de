"""Keys, scopes, teams (404 across teams), the key cache, last_used_at, /v1/keys."""

from __future__ import annotations

import os
import stat
import time

import pytest
from fastapi.testclient import TestClient

from service.auth import KeyAuthenticator, hash_key, key_prefix, load_secret
from service.db.base import session_scope
from service.db.tables import ApiKey, utcnow
from service.errors import AuthError
from tests.api.conftest import ADMIN_KEY, bearer, tiny_spec

ENDPOINT_SCOPES = [
    ("post", "/v1/datasets", "datasets:write"),
    ("delete", "/v1/datasets/x", "datasets:write"),
    ("post", "/v1/datasets/x/audit", "datasets:write"),
    ("post", "/v1/jobs", "jobs:write"),
    ("post", "/v1/jobs/x/cancel", "jobs:write"),
    ("get", "/v1/models", "models:read"),
    ("get", "/v1/models/m", "models:read"),
    ("get", "/v1/models/m/versions/1", "models:read"),
    ("get", "/v1/models/m/versions/1/artifact", "models:read"),
    ("post", "/v1/models/m/predict", "predict"),
    ("get", "/v1/keys", "admin"),
    ("post", "/v1/keys", "admin"),
    ("delete", "/v1/keys/x", "admin"),
]


def test_key_format_and_hash_only_stored(settings, make_key) -> None:
    key = make_key()
    assert key.startswith("hw_") and len(key) == 57 and key_prefix(key) == key[:13]
    with session_scope(settings.DATABASE_URL) as s:
        row = s.query(ApiKey).one()
        assert row.prefix == key[:13]
        assert row.key_hash == hash_key(key, b"test-secret") and key not in (row.key_hash, row.prefix)


def test_secret_file_created_0600(settings) -> None:
    no_secret = settings.model_copy(update={"SECRET": None})
    secret = load_secret(no_secret)
    path = settings.DATA_DIR / "secret.key"
    assert len(secret) == 64 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(no_secret) == secret


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer hw_short", "Basic abc", "Bearer " + "hw_" + "a" * 54])
def test_401_missing_or_invalid(client: TestClient, header) -> None:
    r = client.get("/v1/jobs", headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"


def test_wrong_secret_part_is_401(client: TestClient, make_key) -> None:
    key = make_key()
    forged = key[:14] + ("A" if key[14] != "A" else "B") + key[15:]
    assert client.get("/v1/jobs", headers=bearer(forged)).status_code == 401
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINT_SCOPES)
def test_403_without_scope(client: TestClient, make_key, method, path, scope) -> None:
    others = [s for s in ("datasets:write", "jobs:write", "models:read", "predict") if s != scope]
    if scope == "datasets:write" and path.endswith("/audit"):
        others.remove("jobs:write")  # audit accepts either
    r = client.request(method, path, headers=bearer(make_key(others)))
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "Forbidden" and scope in r.json()["detail"]


def test_reads_need_only_a_valid_key(client: TestClient, make_key) -> None:
    headers = bearer(make_key(["predict"]))
    assert client.get("/v1/datasets", headers=headers).status_code == 200
    assert client.get("/v1/jobs", headers=headers).status_code == 200


def test_admin_implies_every_scope(client: TestClient, make_key) -> None:
    headers = bearer(make_key(["admin"]))
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert client.get("/v1/keys", headers=headers).status_code == 200
    assert client.post("/v1/jobs/x/cancel", headers=headers).status_code == 404


def test_other_team_resources_are_404(client: TestClient, make_key, dataset_id, register_model) -> None:
    alpha = bearer(make_key(team="alpha"))
    beta = bearer(make_key(["admin"], team="beta"))
    job = client.post("/v1/jobs", headers=alpha, json={"dataset_id": dataset_id, "model_name": "m",
                                                        "spec": tiny_spec()}).json()["id"]
    register_model("shapes", team="alpha")
    for method, path in [("get", f"/v1/datasets/{dataset_id}"), ("delete", f"/v1/datasets/{dataset_id}"),
                         ("post", f"/v1/jobs/{job}/cancel"), ("get", f"/v1/jobs/{job}"),
                         ("get", "/v1/models/shapes"), ("get", "/v1/models/shapes/versions/1"),
                         ("get", "/v1/models/shapes/versions/1/artifact")]:
        r = client.request(method, path, headers=beta)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"] == "NotFound"
    r = client.post(f"/v1/datasets/{dataset_id}/audit", headers=beta, json={"spec": tiny_spec()})
    assert r.status_code == 404
    r = client.post("/v1/jobs", headers=beta, json={"dataset_id": dataset_id, "model_name": "m", "spec": tiny_spec()})
    assert r.status_code == 404
    assert client.get("/v1/datasets", headers=beta).json()["items"] == []
    assert client.get("/v1/jobs", headers=beta).json()["items"] == []
    assert client.get("/v1/models", headers=beta).json()["items"] == []
    assert client.get(f"/v1/datasets/{dataset_id}", headers=alpha).status_code == 200


def test_revoked_key_is_rejected(client: TestClient, make_key) -> None:
    key = make_key(["admin"])
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 200
    key_id = client.get("/v1/keys", headers=bearer(key)).json()["items"][0]["id"]
    r = client.delete(f"/v1/keys/{key_id}", headers=bearer(key))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = client.get("/v1/jobs", headers=bearer(key))  # same process: the cache entry was dropped
    assert r.status_code == 401 and r.json()["detail"] == "API key revoked"


def test_cache_ttl_and_revocation_elsewhere(settings, make_key, app) -> None:
    """Another process revokes in the DB: this process notices once the cached lookup expires."""
    key = make_key()
    calls = []
    auth = KeyAuthenticator(settings, app.state.sessionmaker, ttl=0.2)
    original = auth._lookup

    def counting(prefix, digest):
        calls.append(prefix)
        return original(prefix, digest)

    auth._lookup = counting  # type: ignore[method-assign]
    for _ in range(5):
        assert auth.authenticate(key).team == "alpha"
    assert len(calls) == 1  # the database was asked once
    with session_scope(settings.DATABASE_URL) as s:
        s.query(ApiKey).one().revoked_at = utcnow()
    assert auth.authenticate(key).team == "alpha"  # still cached
    time.sleep(0.25)
    with pytest.raises(AuthError, match="revoked"):
        auth.authenticate(key)


def test_last_used_at_written_at_most_once_a_minute(settings, make_key, app) -> None:
    key = make_key()
    auth = KeyAuthenticator(settings, app.state.sessionmaker, ttl=0.0)

    def last_used():
        with session_scope(settings.DATABASE_URL) as s:
            return s.query(ApiKey).one().last_used_at

    assert last_used() is None
    auth.authenticate(key)
    first = last_used()
    assert first is not None
    for _ in range(3):
        auth.authenticate(key)
    assert last_used() == first  # not rewritten within the minute
    auth.last_used_interval = 0.0
    time.sleep(0.01)
    auth.authenticate(key)
    assert last_used() > first


def test_root_admin_key_from_settings(client: TestClient) -> None:
    r = client.get("/v1/keys", headers=bearer(ADMIN_KEY))
    assert r.status_code == 200
    assert client.get("/v1/datasets", headers=bearer(ADMIN_KEY + "x")).status_code == 401
