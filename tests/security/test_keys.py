"""API keys end to end: >= 256 random bits with a recognisable prefix, shown once, only an HMAC-SHA-256 (server
secret) stored, constant-time comparison, revocation (at once in this process; within the 5 s cache TTL in
others), last_used_at recorded, and another team's resources indistinguishable from missing ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from service import auth as auth_module
from service.db.base import session_scope
from service.db.tables import ApiKey, utcnow
from tests.security.conftest import World, db_snapshot

KEY_RE = re.compile(r"^hw_[0-9a-f]{10}_[A-Za-z0-9_-]{43}$")


def create(world: World, scopes=("predict",), who: str = "root", **extra) -> dict:
    r = world.raw("POST", "/v1/keys", who=who, json={"name": "k", "scopes": list(scopes), **extra})
    assert r.status_code == 201, r.text
    assert r.headers.get("cache-control") == "no-store"
    return r.json()


def test_key_format_entropy_and_shown_once(world: World) -> None:
    created = [create(world) for _ in range(20)]
    keys = [c["key"] for c in created]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert KEY_RE.match(key), key
        secret = key.split("_", 2)[2]
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32  # 256 bits from secrets.token_urlsafe(32)
    listing = world.raw("GET", "/v1/keys", who="root").json()["items"]
    text = repr(listing)
    assert all(k not in text and k.split("_", 2)[2] not in text for k in keys)
    assert all("key" not in item and "key_hash" not in item for item in listing)
    one = world.raw("GET", "/v1/keys", who="root").json()["items"][0]
    assert one["prefix"].startswith("hw_") and len(one["prefix"]) == 13


def test_only_an_hmac_of_the_key_is_stored(world: World) -> None:
    body = create(world, ["admin"])
    key, secret_part = body["key"], body["key"].split("_", 2)[2]
    everything = repr(db_snapshot(world.app.state.engine))
    assert secret_part not in everything and key not in everything
    assert hashlib.sha256(key.encode()).hexdigest() not in everything  # not a plain hash either
    db_file = world.settings.DATABASE_URL.removeprefix("sqlite:///")
    with world.app.state.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(FULL)")
    raw = open(db_file, "rb").read()
    assert secret_part.encode() not in raw
    with session_scope(world.settings.DATABASE_URL) as s:
        row = s.get(ApiKey, body["id"])
        expected = hmac.new(world.settings.SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()
        assert row.key_hash == expected and row.prefix == key[:13]
    assert world.raw("GET", "/v1/keys", headers={"Authorization": f"Bearer {key}"}, who=None).status_code == 200
    # the hash depends on the server secret: the same row under another secret rejects the key
    world.app.state.authenticator._secret = b"another-secret"
    world.app.state.authenticator.invalidate()
    assert world.raw("GET", "/v1/keys", headers={"Authorization": f"Bearer {key}"}, who=None).status_code == 401


def test_hashes_are_compared_in_constant_time(world: World, monkeypatch) -> None:
    calls, original = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    world.app.state.authenticator.invalidate()
    assert world.raw("GET", "/v1/jobs", who="alpha").status_code == 200
    assert world.raw("GET", "/v1/jobs", who="forged").status_code == 401
    assert len(calls) >= 2 and all(isinstance(a, str | bytes) for a, _ in calls)


def test_revocation_via_api_is_immediate(world: World) -> None:
    body = create(world, ["predict", "models:read"], who="alpha_admin")
    headers = {"Authorization": f"Bearer {body['key']}"}
    assert world.raw("GET", "/v1/models", who=None, headers=headers).status_code == 200
    r = world.raw("DELETE", f"/v1/keys/{body['id']}", who="alpha_admin")
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = world.raw("GET", "/v1/models", who=None, headers=headers)
    assert r.status_code == 401 and r.json()["detail"] == "API key revoked"


def test_revocation_elsewhere_takes_effect_within_the_cache_ttl(world: World, monkeypatch) -> None:
    """Another process (CLI, another API replica) revokes in the database: this process keeps accepting the key
    only until its cached lookup expires (CACHE_TTL_SECONDS = 5)."""
    assert auth_module.CACHE_TTL_SECONDS <= 5
    clock = [1000.0]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: clock[0])
    world.app.state.authenticator.invalidate()
    assert world.raw("GET", "/v1/jobs", who="alpha").status_code == 200  # cached now
    with session_scope(world.settings.DATABASE_URL) as s:
        s.get(ApiKey, world.key_ids["alpha"]).revoked_at = utcnow()
    clock[0] += auth_module.CACHE_TTL_SECONDS - 0.5
    assert world.raw("GET", "/v1/jobs", who="alpha").status_code == 200  # within the TTL: documented
    clock[0] += 0.6
    r = world.raw("GET", "/v1/jobs", who="alpha")
    assert r.status_code == 401 and r.json()["detail"] == "API key revoked"


def test_last_used_at_is_recorded(world: World) -> None:
    body = create(world, ["models:read"])
    items = {k["id"]: k for k in world.raw("GET", "/v1/keys", who="root").json()["items"]}
    assert items[body["id"]]["last_used_at"] is None
    assert world.raw("GET", "/v1/models", who=None,
                     headers={"Authorization": f"Bearer {body['key']}"}).status_code == 200
    items = {k["id"]: k for k in world.raw("GET", "/v1/keys", who="root").json()["items"]}
    assert items[body["id"]]["last_used_at"] is not None


@pytest.mark.parametrize("path", ["/v1/datasets/{}", "/v1/jobs/{}", "/v1/models/{}", "/v1/models/{}/versions/1"])
def test_other_teams_resource_is_indistinguishable_from_a_missing_one(world: World, path: str) -> None:
    theirs = {"/v1/datasets/{}": world.ids["beta"], "/v1/jobs/{}": world.ids["beta_job"]}.get(path, "beta-shapes")
    missing = "f" * 32 if "models" not in path else "no-such-model"
    a = world.raw("GET", path.format(theirs))
    b = world.raw("GET", path.format(missing))
    assert a.status_code == b.status_code == 404
    assert a.json()["error"] == b.json()["error"] == "NotFound"
    assert a.json()["detail"].replace(theirs, "X") == b.json()["detail"].replace(missing, "X")
    assert set(a.headers) == set(b.headers)


def test_lists_show_only_the_callers_team(world: World) -> None:
    for path, key in (("/v1/datasets", "items"), ("/v1/jobs", "items"), ("/v1/models", "items")):
        alpha = world.raw("GET", path, who="alpha").json()[key]
        beta = world.raw("GET", path, who="beta").json()[key]
        ids = lambda items: {i.get("id") or i.get("name") for i in items}  # noqa: E731
        assert alpha and beta and not ids(alpha) & ids(beta), path
    beta_keys = world.raw("GET", "/v1/keys", who="beta_admin").json()["items"]
    assert beta_keys and all(k["team"] == "beta" for k in beta_keys)
