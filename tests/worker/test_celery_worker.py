"""A REAL `celery worker` process (what `headwise worker` runs): Redis + PostgreSQL, and the embedded SQLite
broker + SQLite database. Schema from `alembic upgrade head`. Also: kill -9 mid-training -> the worker's
reaper requeues the job and a fresh worker finishes it once, from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from service.db.base import session_scope
from service.db.tables import Job, ModelVersion
from service.queue import enqueue_training, ping_broker

from .conftest import add_dataset, add_job, make_env
from .test_run_job import tiny_spec  # early stopping off: the chaos test counts every epoch

pytestmark = [
    pytest.mark.slow,
    # kombu's SQLAlchemy transport (embedded broker) uses a loader option SQLAlchemy 2.1 deprecates
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")


class Worker:
    """`celery -A worker.app:app worker` in its own process group, logging to a file."""

    def __init__(self, log_path: Path, **settings: str):
        from service.cli import worker_command

        env = dict(os.environ)
        env.update({f"HEADWISE_{k}": str(v) for k, v in settings.items()})
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [*worker_command("gpu", 1), "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(10)
        self.kill(signal.SIGKILL)  # any leftover child of this group
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def wait_for(job_id: str, predicate, timeout: float, worker: Worker) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_row(job_id)
        if predicate(job):
            return job
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.output()}")
        time.sleep(0.25)
    job = job_row(job_id)
    pytest.fail(f"timeout: job {job.status} {job.progress} {job.error}\nworker log:\n{worker.output()}")


def prepare(monkeypatch, tmp_path: Path, database_url: str, broker_url: str, **settings: str) -> dict[str, str]:
    from service.cli import run_migrations
    from service.ml.examples import make_example_dataset

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    all_settings = {"DATA_DIR": str(data_dir), "DATABASE_URL": database_url, "BROKER_URL": broker_url,
                    "TRAIN_DEVICE": "cpu", **settings}
    for key, value in all_settings.items():
        monkeypatch.setenv(f"HEADWISE_{key}", value)
    from .conftest import clear_caches

    clear_caches()
    run_migrations(database_url)  # the real schema: alembic upgrade head
    make_env(monkeypatch, data_dir, database_url, **settings)
    monkeypatch.setenv("HEADWISE_BROKER_URL", broker_url)
    clear_caches()
    if not ping_broker():
        pytest.fail(f"broker {broker_url} not reachable")
    dataset = make_example_dataset(tmp_path / "shapes.zip", n=64, seed=2, image_size=16)
    all_settings["DATASET_ID"] = add_dataset(dataset, data_dir)
    return all_settings


def run_one_job(tmp_path: Path, settings: dict[str, str]) -> None:
    dataset_id = settings.pop("DATASET_ID")
    worker = Worker(tmp_path / "worker.log", **settings)
    try:
        job_id = add_job(dataset_id, tiny_spec(epochs=2), model_name="real")
        enqueue_training(job_id)  # after the commit, by task name, like the API
        job = wait_for(job_id, lambda j: j.status in TERMINAL, 180, worker)
        assert job.status == "succeeded", f"{job.error}\n{worker.output()}"
        assert job.attempts == 1 and job.progress["fraction"] == 1.0
        enqueue_training(job_id)  # a duplicate delivery does nothing
        time.sleep(3)
        with session_scope() as session:
            assert session.query(ModelVersion).filter_by(job_id=job_id).count() == 1
        assert job_row(job_id).attempts == 1
    finally:
        worker.stop()


def test_real_worker_with_redis_and_postgres(tmp_path, monkeypatch, redis_url, postgres_url):
    pytest.importorskip("torch")
    settings = prepare(monkeypatch, tmp_path, postgres_url, redis_url)
    run_one_job(tmp_path, settings)


def test_real_worker_embedded_sqlite_broker_and_database(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    data_dir = tmp_path / "data"
    settings = prepare(monkeypatch, tmp_path, f"sqlite:///{data_dir / 'headwise.db'}",
                       f"sqla+sqlite:///{data_dir / 'broker.db'}")
    run_one_job(tmp_path, settings)


def test_kill_9_mid_training_resumes_from_checkpoint_once(tmp_path, monkeypatch):
    """Embedded broker: the killed worker's message is gone for good, so only the reaper can save the job."""
    pytest.importorskip("torch")
    data_dir = tmp_path / "data"
    fast = {"JOB_LEASE_SECONDS": "8", "REAPER_SECONDS": "1", "HEARTBEAT_SECONDS": "0.5",
            "PROGRESS_SECONDS": "0.2", "CANCEL_POLL_SECONDS": "0.5"}
    settings = prepare(monkeypatch, tmp_path, f"sqlite:///{data_dir / 'headwise.db'}",
                       f"sqla+sqlite:///{data_dir / 'broker.db'}", **fast)
    dataset_id = settings.pop("DATASET_ID")
    epochs = 30
    job_id = add_job(dataset_id, tiny_spec(epochs=epochs), model_name="chaos")

    first = Worker(tmp_path / "worker1.log", **settings)
    try:
        enqueue_training(job_id)
        before = wait_for(job_id, lambda j: j.status == "running" and j.progress.get("epoch", 0) >= 3, 180, first)
        assert before.progress["epoch"] < epochs, "training finished before the kill; make it longer"
        first.kill(signal.SIGKILL)  # the whole worker: parent and the training child
        first.proc.wait(10)
    finally:
        first.stop()
    assert job_row(job_id).status == "running"  # nobody marked it: the row still says running

    second = Worker(tmp_path / "worker2.log", **settings)
    try:
        job = wait_for(job_id, lambda j: j.status in TERMINAL, 240, second)
        assert job.status == "succeeded", f"{job.error}\n{second.output()}"
        assert job.attempts == 2
        assert [h["epoch"] for h in job.history] == list(range(1, epochs + 1))
        # epochs finished before the kill come from the checkpoint, not retrained
        assert job.history[0] == before.history[0]
        assert "requeued" in second.output()
        with session_scope() as session:
            assert session.query(ModelVersion).count() == 1
        assert not (data_dir / "jobs" / job_id).exists()
    finally:
        second.stop()
