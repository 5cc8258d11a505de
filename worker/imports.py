"""run_import: download a dataset from object storage, then the SAME checks and storage as an upload.

`s3://bucket/key.zip|.npz` is downloaded as is; `s3://bucket/prefix/` (labels.csv or labels.jsonl plus the
images, any depth) is downloaded object by object (progress = objects done / total) and zipped locally
(stored, not compressed) so the archive reader validates it exactly like an uploaded zip. The total size is
capped by HEADWISE_MAX_UPLOAD_BYTES. The source is checked against HEADWISE_IMPORT_ALLOWED_PREFIXES again here.

Leased like a job: the claim takes attempt N, a daemon thread renews the heartbeat every HEARTBEAT_SECONDS, and
every write is fenced by the attempt. A worker that dies mid-import stops heartbeating; any worker's reaper then
queues the import again (worker/reaper.py: reap_stale_imports) or fails it after HEADWISE_MAX_ATTEMPTS. A worker
that lost its lease (it was too slow to heartbeat and was requeued) notices and stops without writing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

from service.config import get_settings
from service.db import imports as imports_repo
from service.db import jobs as jobs_repo
from service.db.base import session_scope
from service.storage import storage_for
from service.storage.objects import ObjectMissingError, S3ObjectStore, sha256_file
from service.storage.sources import ARCHIVES, check_source

log = logging.getLogger("headwise.worker")
LABELS = ("labels.csv", "labels.jsonl")


def run_import(import_id: str) -> str:
    from worker.jobs import worker_name

    with session_scope() as session:
        row = imports_repo.claim_import(session=session, import_id=import_id, worker=worker_name())
        if row is not None:
            session.expunge(row)
    if row is None:
        log.info("import %s not claimable: delivery ignored", import_id)
        return "skipped"
    lease = Lease(row.id, row.attempts).start()
    try:
        dataset_id = _import(row, lease)
    except LeaseLost:
        log.warning("import %s: attempt %d lost its lease (requeued elsewhere); stopped", import_id, row.attempts)
        return "lease_lost"
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the import row
        from service.errors import ServiceError
        from worker.jobs import error_message

        message = str(exc) if isinstance(exc, SourceError | ServiceError) else error_message(exc)
        log.info("import %s failed: %s", import_id, message)
        with session_scope() as session:
            imports_repo.finish(session=session, import_id=import_id, status="failed", error=message[:4000],
                                attempt=row.attempts)
        return "failed"
    finally:
        lease.stop()
    log.info("import %s succeeded: dataset %s", import_id, dataset_id)
    return "succeeded"


class SourceError(Exception):
    """The source cannot be imported (missing, too big, no labels file): shown as is."""


class LeaseLost(Exception):
    """This attempt no longer owns the import (the reaper requeued it)."""


class Lease:
    """Renews the import's heartbeat every HEARTBEAT_SECONDS from a daemon thread while the import runs."""

    def __init__(self, import_id: str, attempt: int) -> None:
        self.import_id, self.attempt = import_id, attempt
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"headwise-import-{import_id[:8]}", daemon=True)

    def start(self) -> Lease:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(get_settings().HEARTBEAT_SECONDS):
            try:
                with session_scope() as session:
                    owned = imports_repo.heartbeat(session=session, import_id=self.import_id, attempt=self.attempt)
            except Exception as exc:  # noqa: BLE001 - database down: the next beat tries again
                log.warning("import %s: heartbeat failed: %s", self.import_id, exc)
                continue
            if not owned:
                self.lost = True
                return

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(self.import_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _progress(lease: Lease, done: int, total: int, size: int) -> None:
    lease.check()
    with session_scope() as session:
        owned = imports_repo.write_progress(session=session, import_id=lease.import_id, attempt=lease.attempt,
                                            progress={"objects": done, "total": total,
                                                      "fraction": round(done / max(total, 1), 4), "bytes": size})
    if not owned:
        lease.lost = True
        lease.check()


def _reserve(row, size: int, lease: Lease) -> None:
    """Count `size` bytes against the team's storage quota from now on (progress["bytes"]), or fail the import
    with the upload's 413 message when they do not fit."""
    from service.api import quotas

    settings = get_settings()
    lease.check()
    with session_scope() as session:
        if settings.TEAM_MAX_STORAGE_BYTES:
            jobs_repo.lock_team(session=session, team=row.team)  # concurrent imports and uploads: one at a time
            quotas.check_storage(session, storage_for(settings), settings, row.team, incoming=size,
                                 what="this import", exclude_import=row.id)
        imports_repo.write_progress(session=session, import_id=row.id, attempt=lease.attempt,
                                    progress={"objects": 0, "total": 0, "fraction": 0.0, "bytes": size})


def _download(row, work: Path, lease: Lease) -> tuple[Path, str]:
    """-> (local archive, its file name)."""
    settings = get_settings()
    bucket, key = check_source(row.source, settings.IMPORT_ALLOWED_PREFIXES)
    store = S3ObjectStore(bucket)
    cap = settings.MAX_UPLOAD_BYTES
    if key.lower().endswith(ARCHIVES):
        dest = work / Path(key).name
        listed = [o.size for o in store.list(key) if o.key == key]
        if listed:  # the size before the download; else checked right after it
            _reserve(row, listed[0], lease)
        try:
            store.get_file(key, dest)
        except ObjectMissingError:
            raise SourceError(f"source: no object at {row.source}") from None
        if dest.stat().st_size > cap:
            raise SourceError(f"source: {dest.stat().st_size} bytes exceeds HEADWISE_MAX_UPLOAD_BYTES={cap}")
        if not listed:
            _reserve(row, dest.stat().st_size, lease)
        _progress(lease, 1, 1, dest.stat().st_size)
        return dest, dest.name
    objects = [o for o in store.list(key) if not o.key.endswith("/")]
    names = {o.key[len(key):] for o in objects}
    if not names & set(LABELS):
        raise SourceError(f"source: {row.source} holds no labels.csv or labels.jsonl at its top level "
                         f"({len(objects)} object(s) found)")
    total = sum(o.size for o in objects)
    if total > cap:
        raise SourceError(f"source: {total} bytes under {row.source} exceeds HEADWISE_MAX_UPLOAD_BYTES={cap}")
    _reserve(row, total, lease)
    archive = work / "import.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i, obj in enumerate(objects, 1):
            part = work / "part"
            store.get_file(obj.key, part)
            zf.write(part, obj.key[len(key):])
            part.unlink()
            lease.check()
            if i % 50 == 0 or i == len(objects):
                _progress(lease, i, len(objects), total)
    name = key.rstrip("/").rsplit("/", 1)[-1] or bucket
    return archive, f"{name}.zip"


def _progress_of(session, import_id: str) -> dict:
    from service.db.tables import DatasetImport

    return dict(session.get(DatasetImport, import_id).progress or {})


def _import(row, lease: Lease) -> str:
    from service.api.ingest import Received, check_archive, dataset_name, store_dataset

    settings = get_settings()
    storage = storage_for(settings)
    work = Path(tempfile.mkdtemp(prefix="headwise-import-", dir=storage.ensure() or storage.tmp_dir))
    try:
        path, filename = _download(row, work, lease)
        got = Received(path, filename, "npz" if filename.lower().endswith(".npz") else "zip", path.stat().st_size,
                       sha256_file(path))
        table, _ = check_archive(got, row.spec)  # the upload's checks: DataError / SpecError name row and column
        lease.check()
        with session_scope() as session:
            # the reserved bytes become the dataset row in one transaction: checked again under the team's lock
            imports_repo.write_progress(session=session, import_id=row.id, attempt=row.attempts,
                                        progress={**_progress_of(session, row.id), "bytes": 0})
            dataset = store_dataset(session, storage, got, table, team=row.team,
                                    name=dataset_name(row.name, filename), settings=settings)
            if not imports_repo.finish(session=session, import_id=row.id, status="succeeded",
                                       dataset_id=dataset.id, attempt=row.attempts):
                storage.remove_dataset(dataset.id)  # the row rolls back with the transaction
                raise LeaseLost(row.id)
            return dataset.id
    finally:
        shutil.rmtree(work, ignore_errors=True)
