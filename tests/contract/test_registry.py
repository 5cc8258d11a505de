"""Registry (issue 12): aliases, predict by alias, alias history + rollback, version notes, version deletion --
through the real app on SQLite with real artifacts."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.storage import Storage
from tests.api.conftest import png_bytes

M = "/v1/models/shapes"


def _three_versions(register_model) -> None:
    for _ in range(3):
        register_model("shapes")


def _put(client: TestClient, headers, alias: str, version: int):
    return client.put(f"{M}/aliases/{alias}", headers=headers, json={"version": version})


def _predict(client: TestClient, headers, query: str = ""):
    return client.post(f"{M}/predict{query}", headers=headers, files=[("files", ("a.png", png_bytes(), "image/png"))])


def test_alias_set_move_shown_and_served(client: TestClient, writer, register_model) -> None:
    _three_versions(register_model)
    r = _put(client, writer, "production", 2)
    assert r.status_code == 200, r.text
    event = r.json()
    assert (event["alias"], event["action"], event["from_version"], event["to_version"], event["seq"]) == \
        ("production", "set", None, 2, 1)
    assert event["key_name"] == "release-bot" and event["key_id"]
    model = client.get(M, headers=writer).json()
    assert [(a["alias"], a["version"]) for a in model["aliases"]] == [("production", 2)]
    assert [v["aliases"] for v in model["versions"]] == [[], ["production"], []]
    assert client.get(f"{M}/versions/2", headers=writer).json()["aliases"] == ["production"]
    assert client.get(f"{M}/aliases/production", headers=writer).json()["version"] == 2

    served = _predict(client, writer, "?alias=production")
    assert served.status_code == 200, served.text
    assert served.json()["model"] == {"name": "shapes", "version": 2} and served.json()["alias"] == "production"
    assert _predict(client, writer).json()["model"]["version"] == 3  # default: latest
    assert _predict(client, writer, "?latest=true").json()["model"]["version"] == 3

    moved = _put(client, writer, "production", 3).json()
    assert (moved["from_version"], moved["to_version"], moved["seq"]) == (2, 3, 2)
    assert _predict(client, writer, "?alias=production").json()["model"]["version"] == 3  # no stale resolution


def test_predict_selectors_are_exclusive_and_named(client: TestClient, writer, register_model) -> None:
    _three_versions(register_model)
    _put(client, writer, "production", 1)
    for query in ("?alias=production&version=1", "?alias=production&latest=true", "?version=2&latest=true"):
        r = _predict(client, writer, query)
        assert r.status_code == 422 and "mutually exclusive" in r.json()["detail"], query
    r = _predict(client, writer, "?alias=staging")
    assert r.status_code == 404 and "alias 'staging'" in r.json()["detail"]


def test_alias_errors(client: TestClient, writer, auth, register_model) -> None:
    _three_versions(register_model)
    assert _put(client, writer, "production", 9).status_code == 404
    assert "version 9" in _put(client, writer, "production", 9).json()["detail"]
    assert _put(client, writer, "latest", 1).status_code == 422
    assert _put(client, writer, "9lives", 1).status_code == 422  # must start with a letter
    assert client.put(f"{M}/aliases/p", headers=writer, json={"version": 1, "x": 1}).status_code == 422
    assert client.put("/v1/models/nope/aliases/p", headers=writer, json={"version": 1}).status_code == 404
    r = _put(client, auth, "production", 1)  # models:read is not enough to move an alias
    assert r.status_code == 403 and "models:write" in r.json()["detail"]
    assert client.delete(f"{M}/aliases/never", headers=writer).status_code == 404
    assert client.post(f"{M}/aliases/never/rollback", headers=writer).status_code == 404


def test_history_and_rollback(client: TestClient, writer, register_model) -> None:
    _three_versions(register_model)
    for v in (1, 2, 3):
        _put(client, writer, "production", v)
    r = client.post(f"{M}/aliases/production/rollback", headers=writer)
    assert r.status_code == 200, r.text
    assert (r.json()["action"], r.json()["from_version"], r.json()["to_version"]) == ("rollback", 3, 2)
    r = client.post(f"{M}/aliases/production/rollback", headers=writer)  # walks further back
    assert (r.json()["from_version"], r.json()["to_version"]) == (2, 1)
    r = client.post(f"{M}/aliases/production/rollback", headers=writer)
    assert r.status_code == 409 and "no earlier version" in r.json()["detail"]
    assert client.get(f"{M}/aliases/production", headers=writer).json()["version"] == 1
    history = client.get(f"{M}/aliases/production/history", headers=writer).json()["items"]
    assert [(e["seq"], e["action"], e["from_version"], e["to_version"]) for e in history] == [
        (1, "set", None, 1), (2, "set", 1, 2), (3, "set", 2, 3), (4, "rollback", 3, 2), (5, "rollback", 2, 1)]
    assert all(e["created_at"] and e["key_name"] == "release-bot" for e in history)

    assert client.delete(f"{M}/aliases/production", headers=writer).status_code == 204
    assert client.get(M, headers=writer).json()["aliases"] == []
    assert _predict(client, writer, "?alias=production").status_code == 404
    last = client.get(f"{M}/aliases/production/history", headers=writer).json()["items"][-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("delete", 1, None)
    _put(client, writer, "production", 3)
    assert client.post(f"{M}/aliases/production/rollback", headers=writer).status_code == 409  # re-created


def test_patch_version_notes(client: TestClient, writer, register_model) -> None:
    register_model("shapes")
    r = client.patch(f"{M}/versions/1", headers=writer, json={"description": "first try", "tags": ["baseline"]})
    assert r.status_code == 200, r.text
    assert (r.json()["description"], r.json()["tags"]) == ("first try", ["baseline"])
    r = client.patch(f"{M}/versions/1", headers=writer, json={"tags": ["a", "b"]})  # description untouched
    assert (r.json()["description"], r.json()["tags"]) == ("first try", ["a", "b"])
    assert client.get(f"{M}/versions/1", headers=writer).json()["tags"] == ["a", "b"]
    assert client.patch(f"{M}/versions/1", headers=writer, json={"tags": [""]}).status_code == 422
    assert client.patch(f"{M}/versions/1", headers=writer, json={"metrics": {}}).status_code == 422
    assert client.patch(f"{M}/versions/2", headers=writer, json={"tags": []}).status_code == 404


def test_delete_version(client: TestClient, writer, register_model, settings) -> None:
    _three_versions(register_model)
    _put(client, writer, "production", 3)
    assert _predict(client, writer, "?version=3").status_code == 200  # loaded in the predictor cache
    r = client.delete(f"{M}/versions/3", headers=writer)
    assert r.status_code == 409 and "production" in r.json()["detail"]
    _put(client, writer, "production", 2)
    path = Storage(settings.DATA_DIR).abs(client.app.state.sessionmaker().execute(  # the files before
        __import__("sqlalchemy").text("SELECT artifact_path FROM model_versions WHERE version = 3")).scalar_one())
    assert path.is_dir()
    assert client.delete(f"{M}/versions/3", headers=writer).status_code == 204
    assert not path.exists()
    assert client.get(f"{M}/versions/3", headers=writer).status_code == 404
    assert _predict(client, writer, "?version=3").status_code == 404
    assert _predict(client, writer).json()["model"]["version"] == 2  # latest is now 2
    assert client.delete(f"{M}/versions/3", headers=writer).status_code == 404
    assert [v["version"] for v in client.get(M, headers=writer).json()["versions"]] == [1, 2]


def test_deleted_number_is_never_reused(client: TestClient, writer, register_model, settings) -> None:
    """The worker's finish_succeeded allocates after the highest number ever given, not after the highest left."""
    from service.db import registry as registry_repo
    from service.db.base import session_scope
    from service.db.tables import Job, new_id
    from tests.api.conftest import tiny_spec

    _three_versions(register_model)
    with session_scope(settings.DATABASE_URL) as s:  # the fixture inserts rows directly: record what it gave
        s.execute(__import__("sqlalchemy").text("UPDATE registered_models SET last_version = 3"))
    assert client.delete(f"{M}/versions/3", headers=writer).status_code == 204
    with session_scope(settings.DATABASE_URL) as s:
        job = Job(id=new_id(), team="alpha", model_name="shapes", spec=tiny_spec(), status="running", attempts=1,
                  progress={}, history=[], metrics={}, cancel_requested=False)
        s.add(job)
        s.flush()
        mv = registry_repo.finish_succeeded(session=s, job_id=job.id, attempt=1, spec=tiny_spec(), metrics={},
                                            history=[], checksums={}, artifact_path=lambda m, n: f"artifacts/{m}/{n}")
        assert mv is not None and mv.version == 4
