"""The reaper's lost-doorbell recovery (worker.reaper.ring_lost_doorbells) without processes: queued jobs are
enqueued again only when the broker holds fewer messages than there are queued jobs, only once they have waited a
lease since their last enqueue, and at most once per lease; cancelled, running and finished jobs never."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from service.db import jobs as jobs_repo
from service.db.base import session_scope
from service.db.tables import Job, utcnow
from tests.worker.conftest import add_job, make_env

SPEC = {"tasks": [{"name": "category", "type": "multiclass"}]}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from service.db.base import get_engine
    from tests.worker.conftest import clear_caches

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    yield make_env(monkeypatch, data_dir, f"sqlite:///{data_dir / 'headwise.db'}", JOB_LEASE_SECONDS="10")
    get_engine().dispose()
    clear_caches()


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> dict:
    state: dict = {"waiting": 0, "sent": []}
    monkeypatch.setattr("worker.reaper.queued_messages", lambda: state["waiting"])
    monkeypatch.setattr("worker.reaper.enqueue_training", state["sent"].append)
    return state


def age(job_id: str, seconds: float, field: str = "created_at") -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        setattr(job, field, utcnow() - timedelta(seconds=seconds))


def test_lost_messages_are_sent_again_once_per_lease(env, broker) -> None:
    from worker.reaper import ring_lost_doorbells

    old, fresh = add_job(None, SPEC), add_job(None, SPEC)
    age(old, 60)
    broker["waiting"] = 2  # both messages are in the broker: nothing to do
    assert ring_lost_doorbells() == 0 and broker["sent"] == []
    broker["waiting"] = 0  # the broker lost them (restart without persistence)
    assert ring_lost_doorbells() == 1 and broker["sent"] == [old]  # the fresh one may still be in flight
    assert ring_lost_doorbells() == 0  # rung within this lease
    age(old, 11, "enqueued_at")
    age(fresh, 11)
    assert ring_lost_doorbells() == 2 and sorted(broker["sent"][1:]) == sorted([old, fresh])


def test_only_plain_queued_jobs_are_rung(env, broker) -> None:
    from worker.reaper import ring_lost_doorbells

    ids = [add_job(None, SPEC) for _ in range(4)]
    for job_id in ids:
        age(job_id, 60)
    with session_scope() as session:
        session.get(Job, ids[0]).cancel_requested = True
        jobs_repo.claim_job(session=session, job_id=ids[1], worker="w:1")
        session.get(Job, ids[2]).status = "succeeded"
    assert ring_lost_doorbells() == 1 and broker["sent"] == [ids[3]]


def test_unknown_broker_state_does_nothing(env, broker) -> None:
    from worker.reaper import ring_lost_doorbells

    age(add_job(None, SPEC), 60)
    broker["waiting"] = None
    assert ring_lost_doorbells() == 0 and broker["sent"] == []
