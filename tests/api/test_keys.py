"""/v1/keys: list, create (key shown once), revoke; team confinement of non-root admins."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN_KEY, bearer

ROOT = bearer(ADMIN_KEY)


def test_create_list_use_revoke(client: TestClient) -> None:
    r = client.post("/v1/keys", headers=ROOT, json={"name": "ci", "scopes": ["predict", "models:read"],
                                                    "team": "gamma"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["team"] == "gamma" and body["scopes"] == ["models:read", "predict"]
    assert body["key"].startswith(body["prefix"] + "_") and r.headers["cache-control"] == "no-store"
    key = body["key"]
    assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    listed = client.get("/v1/keys", headers=ROOT).json()["items"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    assert listed[0]["last_used_at"] is not None
    r = client.delete(f"/v1/keys/{body['id']}", headers=ROOT)
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert client.get("/v1/models", headers=bearer(key)).status_code == 401


def test_team_admin_is_confined_to_its_team(client: TestClient, make_key) -> None:
    admin = bearer(make_key(["admin"], team="alpha"))
    other = client.post("/v1/keys", headers=ROOT, json={"name": "b", "scopes": ["predict"], "team": "beta"}).json()
    r = client.post("/v1/keys", headers=admin, json={"name": "x", "scopes": ["predict"], "team": "beta"})
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    r = client.post("/v1/keys", headers=admin, json={"name": "x", "scopes": ["predict"]})
    assert r.status_code == 201 and r.json()["team"] == "alpha"
    assert {k["team"] for k in client.get("/v1/keys", headers=admin).json()["items"]} == {"alpha"}
    assert client.delete(f"/v1/keys/{other['id']}", headers=admin).status_code == 404
    assert client.delete("/v1/keys/unknown", headers=admin).status_code == 404


def test_create_validation(client: TestClient) -> None:
    r = client.post("/v1/keys", headers=ROOT, json={"name": "x", "scopes": ["root"]})
    assert r.status_code == 422 and "scopes" in r.json()["detail"] and "root" in r.json()["detail"]
    r = client.post("/v1/keys", headers=ROOT, json={"name": "x", "scopes": []})
    assert r.status_code == 422 and "body.scopes" in r.json()["detail"]
    r = client.post("/v1/keys", headers=ROOT, json={"name": "x", "scopes": ["predict"], "team": "../etc"})
    assert r.status_code == 422 and "body.team" in r.json()["detail"]
