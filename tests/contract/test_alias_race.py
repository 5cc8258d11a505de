"""Two promotions of one alias racing on PostgreSQL end with one consistent alias and two chained history rows:
the alias move takes the registered model's row lock before it reads where the alias points."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.db import aliases as aliases_repo

M = "/v1/models/shapes"


@pytest.fixture
def settings(pg_settings: Settings) -> Iterator[Settings]:  # the API fixtures on PostgreSQL
    yield pg_settings


def test_two_promotions_race(app, writer, register_model, settings, monkeypatch) -> None:
    assert settings.DATABASE_URL.startswith("postgresql")
    for _ in range(3):
        register_model("shapes")
    client = TestClient(app)  # no context manager: every request gets its own event loop, threads run at once
    assert client.put(f"{M}/aliases/production", headers=writer, json={"version": 1}).status_code == 200

    # Widen the window between "read where the alias points" and "write the move": without the row lock both
    # requests would read version 1 and record 1 -> x twice.
    real = aliases_repo._record

    def slow_record(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(aliases_repo, "_record", slow_record)
    barrier, answers = threading.Barrier(2), {}

    def promote(version: int) -> None:
        barrier.wait()
        answers[version] = client.put(f"{M}/aliases/production", headers=writer, json={"version": version})

    threads = [threading.Thread(target=promote, args=(v,)) for v in (2, 3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert time.monotonic() - started >= 1.0  # serialized: the second waited for the first's lock
    assert [answers[v].status_code for v in (2, 3)] == [200, 200], {v: a.text for v, a in answers.items()}

    history = client.get(f"{M}/aliases/production/history", headers=writer).json()["items"]
    assert len(history) == 3 and [e["seq"] for e in history] == [1, 2, 3]
    first, second = history[1], history[2]
    assert first["from_version"] == 1 and second["from_version"] == first["to_version"]
    assert {first["to_version"], second["to_version"]} == {2, 3}
    current = client.get(f"{M}/aliases/production", headers=writer).json()["version"]
    assert current == second["to_version"]
    assert [a["version"] for a in client.get(M, headers=writer).json()["aliases"]] == [current]
