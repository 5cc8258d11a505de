"""Dataset imports are leased like jobs (service/db/imports.py, worker/imports.py, worker/reaper.py):
a worker SIGKILLed mid-download leaves the import `running` with a heartbeat that stops; the reaper queues it again
and the next attempt imports it (one dataset); a stale attempt can no longer write; after MAX_ATTEMPTS the import
fails with a reason; a queued import whose message was lost (the API replica died before enqueueing) is rung again
once per lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from service.db import imports as imports_repo
from service.db.base import db_now, session_scope
from service.db.tables import Dataset, DatasetImport
from tests.worker.conftest import make_env

pytestmark = pytest.mark.slow

SLOW_CHILD = """
import sys, time
from service.storage.objects import S3ObjectStore
get = S3ObjectStore.get_file
def slow(self, key, dest):
    time.sleep(0.05)
    return get(self, key, dest)
S3ObjectStore.get_file = slow
from worker.imports import run_import
run_import(sys.argv[1])
"""


def _row(import_id: str) -> DatasetImport:
    with session_scope() as session:
        row = session.get(DatasetImport, import_id)
        session.expunge(row)
        return row


def _age(import_id: str, seconds: float) -> None:
    """Move the heartbeat (and doorbell) back in time, as if the worker had been silent that long."""
    with session_scope() as session:
        row = session.get(DatasetImport, import_id)
        past = db_now(session=session) - timedelta(seconds=seconds)
        row.heartbeat_at = past if row.heartbeat_at is not None else None
        row.enqueued_at = past


@pytest.fixture
def rung(monkeypatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr("worker.reaper.enqueue_import", sent.append)
    return sent


def test_worker_killed_mid_import_is_requeued_and_the_next_attempt_imports(s3, tmp_path: Path, monkeypatch,
                                                                           rung) -> None:
    from tests.e2e.harness import make_dataset
    from worker.imports import run_import
    from worker.reaper import reap_stale_imports

    data = tmp_path / "data"
    data.mkdir()
    make_env(monkeypatch, data, f"sqlite:///{data / 'hw.db'}", STORAGE_URL=f"s3://{s3.bucket}/store",
             IMPORT_ALLOWED_PREFIXES=f"s3://{s3.bucket}/incoming/", HEARTBEAT_SECONDS="0.5", JOB_LEASE_SECONDS="5")
    client = s3.client()
    with zipfile.ZipFile(make_dataset(tmp_path / "src", n=120)) as zf:
        for name in zf.namelist():
            if not name.endswith("/"):
                client.put_object(Bucket=s3.bucket, Key=f"incoming/shapes/{name}", Body=zf.read(name))
    with session_scope() as session:
        import_id = imports_repo.create_import(session=session, team="default", source=f"s3://{s3.bucket}/incoming/"
                                               "shapes/", name=None, spec=None).id
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, import_id], cwd=repo,
                             env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.monotonic() + 60
        while (_row(import_id).progress or {}).get("objects", 0) < 50:  # mid-download
            assert child.poll() is None and time.monotonic() < deadline, "the import ended before the kill"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    first = _row(import_id)
    assert (first.status, first.attempts) == ("running", 1) and first.worker

    assert reap_stale_imports()["imports_requeued"] == 0, "a fresh heartbeat is not stale"
    _age(import_id, 6)
    assert reap_stale_imports()["imports_requeued"] == 1 and rung == [import_id]
    assert _row(import_id).status == "queued"
    with session_scope() as session:  # the dead attempt can no longer write
        assert not imports_repo.heartbeat(session=session, import_id=import_id, attempt=1)

    assert run_import(import_id) == "succeeded"
    done = _row(import_id)
    assert (done.status, done.attempts, done.error) == ("succeeded", 2, None)
    with session_scope() as session:
        assert session.query(Dataset).count() == 1 and session.get(Dataset, done.dataset_id).num_samples == 120
        assert not imports_repo.finish(session=session, import_id=import_id, status="failed", error="late",
                                       attempt=1), "attempt 1 cannot finish an import attempt 2 owns"


def test_reaper_gives_up_after_max_attempts_and_rings_lost_doorbells(tmp_path: Path, monkeypatch, rung) -> None:
    from worker.reaper import reap_stale_imports

    data = tmp_path / "data"
    data.mkdir()
    make_env(monkeypatch, data, f"sqlite:///{data / 'hw.db'}", MAX_ATTEMPTS="2", JOB_LEASE_SECONDS="5")
    monkeypatch.setattr("worker.reaper.queued_messages", lambda: 0)  # the broker holds no message
    with session_scope() as session:
        lost = imports_repo.create_import(session=session, team="t", source="s3://b/x/", name=None, spec=None).id
        dying = imports_repo.create_import(session=session, team="t", source="s3://b/y/", name=None, spec=None).id
    for attempt in (1, 2):
        with session_scope() as session:
            assert imports_repo.claim_import(session=session, import_id=dying, worker="w").attempts == attempt
        _age(dying, 6)
        counts = reap_stale_imports()
        assert counts["imports_requeued" if attempt == 1 else "imports_failed"] == 1, counts
    failed = _row(dying)
    assert failed.status == "failed" and "worker lost 2 times" in failed.error

    assert rung == [dying]  # `lost` is queued but its doorbell is recent: not rung yet
    _age(lost, 6)
    assert reap_stale_imports()["imports_enqueued_again"] == 1 and rung[-1] == lost
    assert reap_stale_imports()["imports_enqueued_again"] == 0, "once per lease"
    monkeypatch.setattr("worker.reaper.queued_messages", lambda: 5)
    _age(lost, 6)
    assert reap_stale_imports()["imports_enqueued_again"] == 0, "its message is still in the broker"
