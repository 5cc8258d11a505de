"""Job-row state machine (service/db/jobs.py, registry.py) and the reaper, without training."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from service.db import base as db
from service.db import jobs as jobs_repo
from service.db import registry as registry_repo
from service.db.base import session_scope
from service.db.tables import Job, ModelVersion, RegisteredModel, utcnow
from worker import reaper
from worker.jobs import run_job

from .conftest import add_job, make_env

SPEC = {"tasks": [{"name": "category", "type": "multiclass"}]}


def job(job_id: str) -> Job:
    with session_scope() as session:
        row = session.get(Job, job_id)
        session.expunge(row)
        return row


def age_heartbeat(job_id: str, seconds: float) -> None:
    with session_scope() as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=seconds)


def test_claim_is_once_and_counts_attempts(env):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        claimed = jobs_repo.claim_job(session=session, job_id=job_id, worker="w1:1")
        assert claimed is not None and claimed.status == "running" and claimed.attempts == 1
    with session_scope() as session:
        assert jobs_repo.claim_job(session=session, job_id=job_id, worker="w2:2") is None
        assert jobs_repo.claim_job(session=session, job_id="nope", worker="w2:2") is None
    row = job(job_id)
    assert (row.status, row.attempts, row.worker) == ("running", 1, "w1:1")
    assert row.started_at is not None and row.heartbeat_at is not None


def test_second_delivery_of_running_or_finished_job_does_nothing(env):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        jobs_repo.claim_job(session=session, job_id=job_id, worker="w1:1")
    before = job(job_id)
    assert run_job(job_id) == "skipped"
    after = job(job_id)
    assert (after.status, after.attempts, after.worker) == ("running", 1, "w1:1")
    assert after.heartbeat_at == before.heartbeat_at
    with session_scope() as session:
        assert jobs_repo.finish_failed(session=session, job_id=job_id, attempt=1, error="boom")
    assert run_job(job_id) == "skipped"
    assert (job(job_id).status, job(job_id).attempts) == ("failed", 1)
    assert run_job("0" * 32) == "skipped"


def test_queued_job_with_cancel_requested_never_starts(env):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        session.get(Job, job_id).cancel_requested = True
    assert run_job(job_id) == "skipped"
    row = job(job_id)
    assert (row.status, row.attempts, row.finished_at is not None) == ("cancelled", 0, True)


def test_missing_dataset_fails_readably(env):
    job_id = add_job(None, SPEC)
    assert run_job(job_id) == "failed"
    row = job(job_id)
    assert row.status == "failed"
    assert row.error == "the job's dataset no longer exists (it was deleted)"


def test_attempt_fences_heartbeat_progress_and_finish(env):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        jobs_repo.claim_job(session=session, job_id=job_id, worker="w1:1")
    with session_scope() as session:
        assert jobs_repo.heartbeat(session=session, job_id=job_id, attempt=1)
        assert not jobs_repo.heartbeat(session=session, job_id=job_id, attempt=2)
        assert not jobs_repo.write_progress(session=session, job_id=job_id, attempt=2, progress={}, history=[])
        assert not jobs_repo.finish_cancelled(session=session, job_id=job_id, attempt=2)
        assert jobs_repo.finish_cancelled(session=session, job_id=job_id, attempt=1)
        assert not jobs_repo.heartbeat(session=session, job_id=job_id, attempt=1)
    assert job(job_id).status == "cancelled"


def _succeed(job_id: str, attempt: int = 1) -> ModelVersion | None:
    with session_scope() as session:
        version = registry_repo.finish_succeeded(
            session=session, job_id=job_id, attempt=attempt, spec=SPEC, metrics={"m": 1.0}, history=[],
            checksums={"a": "b"}, artifact_path=lambda model_id, n: f"artifacts/{model_id}/{n}",
        )
        if version is not None:
            session.expunge(version)
        return version


def test_finish_succeeded_numbers_versions_per_team_model(env):
    ids = [add_job(None, SPEC, model_name="pets") for _ in range(3)]
    other = add_job(None, SPEC, model_name="pets", team="other")
    for job_id in [*ids, other]:
        with session_scope() as session:
            jobs_repo.claim_job(session=session, job_id=job_id, worker="w")
    versions = [_succeed(job_id) for job_id in [*ids, other]]
    assert [v.version for v in versions] == [1, 2, 3, 1]
    assert versions[0].model_id == versions[2].model_id != versions[3].model_id
    assert versions[1].artifact_path == f"artifacts/{versions[1].model_id}/2"
    assert _succeed(ids[0]) is None  # already succeeded: no second version
    with session_scope() as session:
        assert session.query(ModelVersion).count() == 4
        assert session.query(RegisteredModel).count() == 2
    assert job(ids[0]).status == "succeeded" and job(ids[0]).metrics == {"m": 1.0}


# ---- reaper -----------------------------------------------------------------------------------------


def test_reaper_leaves_fresh_jobs_alone(env, enqueued):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        jobs_repo.claim_job(session=session, job_id=job_id, worker="w1:1")
    assert reaper.reap_stale_jobs() == {"requeued": 0, "failed": 0}
    assert job(job_id).status == "running" and enqueued == []


def test_reaper_requeues_vanished_worker_then_fails_after_max_attempts(env, enqueued):
    job_id = add_job(None, SPEC)
    lease = env.settings.JOB_LEASE_SECONDS
    for attempt in range(1, env.settings.MAX_ATTEMPTS + 1):
        with session_scope() as session:
            claimed = jobs_repo.claim_job(session=session, job_id=job_id, worker=f"w{attempt}:1")
            assert claimed.attempts == attempt
            jobs_repo.write_progress(session=session, job_id=job_id, attempt=attempt,
                                progress={"epoch": attempt, "epochs": 9, "fraction": 0.1}, history=[{"epoch": 1}])
        age_heartbeat(job_id, lease + 5)
        counts = reaper.reap_stale_jobs()
        row = job(job_id)
        if attempt < env.settings.MAX_ATTEMPTS:
            assert counts == {"requeued": 1, "failed": 0}
            assert (row.status, row.worker, row.attempts) == ("queued", None, attempt)
            # heartbeat_at is a running job's lease only; the re-send time of a queued job is enqueued_at
            assert row.heartbeat_at is None and row.enqueued_at is not None
            assert row.progress["epoch"] == attempt and row.history == [{"epoch": 1}]  # kept for the resume
            assert enqueued == [job_id] * attempt
        else:
            assert counts == {"requeued": 0, "failed": 1}
            assert row.status == "failed" and row.finished_at is not None
            assert row.error.startswith(f"worker lost {attempt} times")
    assert enqueued == [job_id] * (env.settings.MAX_ATTEMPTS - 1)
    assert reaper.reap_stale_jobs() == {"requeued": 0, "failed": 0}


def test_requeued_worker_loses_its_lease(env, enqueued):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        jobs_repo.claim_job(session=session, job_id=job_id, worker="slow:1")
    age_heartbeat(job_id, env.settings.JOB_LEASE_SECONDS + 1)
    reaper.reap_stale_jobs()
    with session_scope() as session:
        assert jobs_repo.claim_job(session=session, job_id=job_id, worker="new:2").attempts == 2
    with session_scope() as session:  # the slow worker wakes up: it can no longer touch the row
        assert not jobs_repo.heartbeat(session=session, job_id=job_id, attempt=1)
        assert not jobs_repo.finish_failed(session=session, job_id=job_id, attempt=1, error="x")
    assert _succeed(job_id, attempt=1) is None
    assert job(job_id).status == "running" and job(job_id).worker == "new:2"


def test_reaper_thread_runs_periodically(env, enqueued):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        jobs_repo.claim_job(session=session, job_id=job_id, worker="w1:1")
    age_heartbeat(job_id, env.settings.JOB_LEASE_SECONDS + 1)
    reaper.start_reaper_thread(0.05)
    try:
        for _ in range(100):
            if enqueued:
                break
            threading.Event().wait(0.05)
    finally:
        reaper.stop_reaper_thread()
    assert enqueued == [job_id] and job(job_id).status == "queued"


# ---- PostgreSQL: real concurrency -------------------------------------------------------------------


@pytest.fixture
def pg_env(tmp_path, monkeypatch, postgres_url):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    yield make_env(monkeypatch, data_dir, postgres_url)
    from service.db.base import get_engine

    get_engine().dispose()


def test_claim_race_on_postgres_has_one_winner(pg_env):
    for _ in range(5):
        job_id = add_job(None, SPEC)
        barrier = threading.Barrier(4)
        winners: list[str] = []

        def claim(name: str, job_id: str = job_id, barrier: threading.Barrier = barrier,
                  winners: list[str] = winners) -> None:
            barrier.wait()
            with session_scope() as session:
                if jobs_repo.claim_job(session=session, job_id=job_id, worker=name) is not None:
                    winners.append(name)

        threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        row = job(job_id)
        assert (row.status, row.attempts, row.worker) == ("running", 1, winners[0])


def test_concurrent_finishes_on_postgres_get_consecutive_versions(pg_env):
    ids = [add_job(None, SPEC, model_name="race") for _ in range(6)]
    for job_id in ids:
        with session_scope() as session:
            jobs_repo.claim_job(session=session, job_id=job_id, worker="w")
    barrier = threading.Barrier(len(ids))
    versions: list[int] = []
    errors: list[BaseException] = []

    def finish(job_id: str) -> None:
        barrier.wait()
        try:
            versions.append(_succeed(job_id).version)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(job_id,)) for job_id in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(versions) == list(range(1, len(ids) + 1))
    with session_scope() as session:
        assert session.query(RegisteredModel).count() == 1


def test_reaper_postpones_requeue_while_the_broker_is_down(env, enqueued, monkeypatch):
    job_id = add_job(None, SPEC)
    with session_scope() as session:
        jobs_repo.claim_job(session=session, job_id=job_id, worker="w1:1")
    age_heartbeat(job_id, env.settings.JOB_LEASE_SECONDS + 1)
    monkeypatch.setattr("worker.reaper.ping_broker", lambda timeout=2: False)
    assert reaper.reap_stale_jobs() == {"requeued": 0, "failed": 0}
    assert job(job_id).status == "running" and enqueued == []  # not a queued job nobody was told about
    monkeypatch.setattr("worker.reaper.ping_broker", lambda timeout=2: True)
    assert reaper.reap_stale_jobs() == {"requeued": 1, "failed": 0}
    assert enqueued == [job_id]


def test_worker_parent_never_imports_torch():
    """The Celery parent loads worker.app/tasks/reaper; torch (and CUDA) only load inside run_job in a child."""
    import subprocess
    import sys

    code = ("import sys, worker.app, worker.tasks, worker.reaper, worker.jobs, service.queue; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('service.ml')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_worker_celery_config():
    from service.config import get_settings
    from worker.app import app

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_max_tasks_per_child == 1
    assert conf.task_default_queue == "gpu" and conf.task_ignore_result
    import worker.tasks  # noqa: F401

    assert "headwise.train" in app.tasks and "headwise.reap" not in app.tasks  # the reaper is a thread, not a task
    assert get_settings().visibility_timeout > get_settings().MAX_JOB_SECONDS


def test_redis_visibility_timeout_is_longer_than_the_longest_run():
    from service.queue import broker_options

    redis = broker_options("redis://127.0.0.1:6379/5", 90000)
    assert redis["broker_transport_options"] == {"visibility_timeout": 90000}
    embedded = broker_options("sqla+sqlite:////tmp/x.db", 90000)
    assert "visibility_timeout" not in embedded["broker_transport_options"]  # would reach create_engine


def test_claim_with_database_down_raises_for_a_retry(tmp_path, monkeypatch):
    from worker.jobs import DatabaseUnavailableError

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setattr("service.db.base.Base.metadata.create_all", lambda *a, **k: None)
    make_env(monkeypatch, data_dir, "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseUnavailableError, match="cannot claim job abc"):
        run_job("abc")


def test_monitor_progress_in_memory(env):
    from worker.monitor import JobMonitor

    monitor = JobMonitor("j", 1, 4, env.settings, history=[{"epoch": 1, "x": 0}])
    monitor.on_step({"epoch": 2, "step": 3, "steps": 4})
    assert monitor.progress == {"epoch": 1, "epochs": 4, "fraction": 0.375, "batch": 2, "batches": 4}
    monitor.batch_size = 16
    monitor._pace = (2, 2, monitor._pace[2] - 0.5)  # as if the first step seen came 0.5 s ago
    monitor.on_step({"epoch": 2, "step": 4, "steps": 4})  # one more batch in 0.5 s: 2 batches/s
    assert monitor.progress["batch"] == 3 and monitor.progress["images_per_second"] == pytest.approx(32, rel=0.05)
    # left: 1 batch of epoch 2 + 2 epochs x 4 batches = 9 batches at 2/s
    assert monitor.progress["eta_seconds"] == pytest.approx(4.5, rel=0.05)
    monitor.on_epoch({"epoch": 2, "x": 1})
    monitor.on_epoch({"epoch": 1, "x": 2})  # a resumed run re-reporting an epoch replaces it
    assert monitor.progress == {"epoch": 1, "epochs": 4, "fraction": 0.25}
    assert [(h["epoch"], h["x"]) for h in monitor.history] == [(1, 2), (2, 1)]
    assert not monitor.should_stop()


def test_reaper_on_postgres_uses_the_database_clock(pg_env, enqueued):
    fresh, stale = add_job(None, SPEC), add_job(None, SPEC)
    for job_id in (fresh, stale):
        with session_scope() as session:
            jobs_repo.claim_job(session=session, job_id=job_id, worker="w1:1")
    with session_scope() as session:
        assert abs((db.db_now(session=session) - utcnow()).total_seconds()) < 5
        assert jobs_repo.heartbeat(session=session, job_id=fresh, attempt=1)
    age_heartbeat(stale, pg_env.settings.JOB_LEASE_SECONDS + 2)
    assert reaper.reap_stale_jobs() == {"requeued": 1, "failed": 0}
    assert enqueued == [stale]
    assert job(stale).status == "queued" and job(fresh).status == "running"
