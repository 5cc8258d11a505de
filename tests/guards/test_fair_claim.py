"""claim_next_job on SQLite: a delivery claims the fairest queued job (least recently served team first)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from service.db import jobs as jobs_repo
from service.db.base import get_engine, session_scope
from service.db.tables import Job, utcnow
from tests.worker.conftest import clear_caches, make_env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'headwise.db'}")
    yield
    get_engine().dispose()
    clear_caches()


def add(team: str, offset: int) -> str:
    with session_scope() as session:
        job = jobs_repo.create_job(session=session, team=team, dataset_id=None, model_name="m", spec={})
        job.created_at = utcnow() + timedelta(seconds=offset)
        return job.id


def claim(delivered: str) -> str | None:
    with session_scope() as session:
        job = jobs_repo.claim_next_job(session=session, delivered=delivered, worker="w")
        if job is None:
            return None
        job.status = "succeeded"  # done at once: the next claim sees it served
        return job.id


def test_one_team_s_backlog_does_not_starve_another_team(env):
    alpha = [add("alpha", i) for i in range(4)]
    beta = add("beta", 10)  # created last
    order = [claim(j) for j in [*alpha, beta]]  # deliveries in the broker's FIFO order
    assert order == [alpha[0], beta, alpha[1], alpha[2], alpha[3]]
    assert claim(beta) is None  # a redelivery finds nothing left


def test_cancel_requested_delivery_is_cancelled_and_another_job_runs(env):
    first, second = add("alpha", 0), add("beta", 1)
    with session_scope() as session:
        session.get(Job, first).cancel_requested = True
    assert claim(first) == second
    with session_scope() as session:
        assert session.get(Job, first).status == "cancelled"
