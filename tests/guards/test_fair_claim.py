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

GIB = 1024**3


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


def add_sized(team: str, offset: int, memory: int | None) -> str:
    job_id = add(team, offset)
    with session_scope() as session:
        session.get(Job, job_id).memory_bytes = memory
    return job_id


def test_a_worker_claims_only_jobs_within_its_memory_budget(env):
    big = add_sized("alpha", 0, 8 * GIB)  # oldest, fairest: but over the small worker's budget
    small = add_sized("beta", 1, 1 * GIB)
    unknown = add_sized("gamma", 2, None)  # created before estimates were stored: any worker may take it
    with session_scope() as session:
        got = jobs_repo.claim_next_job(session=session, delivered=big, worker="small", budget=2 * GIB)
        assert got is not None and got.id == small
        got = jobs_repo.claim_next_job(session=session, delivered=big, worker="small", budget=2 * GIB)
        assert got is not None and got.id == unknown
        assert jobs_repo.claim_next_job(session=session, delivered=big, worker="small", budget=2 * GIB) is None
        got = jobs_repo.claim_next_job(session=session, delivered=big, worker="large", budget=16 * GIB)
        assert got is not None and got.id == big


def register(worker_id: str, budget: int | None) -> None:
    from service.db import workers as workers_repo

    with session_scope() as session:
        workers_repo.register(session=session, worker_id=worker_id, host="h", pid=1, queues=["training"],
                              device="cpu", memory_budget=budget, memory_used=100)


def test_an_oversized_job_says_why_it_waits_and_a_small_worker_passes_it_on(env, monkeypatch):
    from service.api.jobs import waiting_detail
    from worker import jobs as worker_jobs

    big = add_sized("alpha", 0, 8 * GIB)
    register("small-1", 2 * GIB)
    with session_scope() as session:
        detail = waiting_detail(session, [session.get(Job, big)], lease=60)[big]
    assert detail.startswith("waiting for a worker with a memory budget of at least 8.0 GiB"), detail
    assert "the 1 live worker(s) have at most 2.0 GiB (HEADWISE_WORKER_MEMORY_BYTES)" in detail

    rung: list[str] = []
    monkeypatch.setattr("service.queue.enqueue_training", rung.append)
    monkeypatch.setenv("HEADWISE_WORKER_MEMORY_BYTES", str(2 * GIB))
    monkeypatch.setenv("HEADWISE_HEARTBEAT_SECONDS", "0.01")
    from service.config import get_settings

    get_settings.cache_clear()
    assert worker_jobs.run_job(big) == "skipped" and rung == []  # nobody can take it: it waits, no ping-pong
    register("large-1", 16 * GIB)
    with session_scope() as session:
        assert waiting_detail(session, [session.get(Job, big)], lease=60) == {}
    assert worker_jobs.run_job(big) == "skipped" and rung == [big]  # passed on to the large worker
    with session_scope() as session:
        assert session.get(Job, big).status == "queued"
