"""run_import: download a dataset from object storage, then the SAME checks and storage as an upload.

`s3://bucket/key.zip|.npz` is downloaded as is; `s3://bucket/prefix/` (labels.csv or labels.jsonl plus the
images, any depth) is downloaded object by object (progress = objects done / total) and zipped locally
(stored, not compressed) so the archive reader validates it exactly like an uploaded zip. The total size is
capped by HEADWISE_MAX_UPLOAD_BYTES. The source is checked against HEADWISE_IMPORT_ALLOWED_PREFIXES again here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
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
    with session_scope() as session:
        row = imports_repo.claim_import(session=session, import_id=import_id)
        if row is not None:
            session.expunge(row)
    if row is None:
        log.info("import %s not claimable: delivery ignored", import_id)
        return "skipped"
    try:
        dataset_id = _import(row)
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the import row
        from service.errors import ServiceError
        from worker.jobs import error_message

        message = str(exc) if isinstance(exc, SourceError | ServiceError) else error_message(exc)
        log.info("import %s failed: %s", import_id, message)
        with session_scope() as session:
            imports_repo.finish(session=session, import_id=import_id, status="failed", error=message[:4000])
        return "failed"
    log.info("import %s succeeded: dataset %s", import_id, dataset_id)
    return "succeeded"


class SourceError(Exception):
    """The source cannot be imported (missing, too big, no labels file): shown as is."""


def _progress(import_id: str, done: int, total: int, size: int) -> None:
    with session_scope() as session:
        imports_repo.write_progress(session=session, import_id=import_id,
                                    progress={"objects": done, "total": total,
                                              "fraction": round(done / max(total, 1), 4), "bytes": size})


def _reserve(row, size: int) -> None:
    """Count `size` bytes against the team's storage quota from now on (progress["bytes"]), or fail the import
    with the upload's 413 message when they do not fit."""
    from service.api import quotas

    settings = get_settings()
    with session_scope() as session:
        if settings.TEAM_MAX_STORAGE_BYTES:
            jobs_repo.lock_team(session=session, team=row.team)  # concurrent imports and uploads: one at a time
            quotas.check_storage(session, storage_for(settings), settings, row.team, incoming=size,
                                 what="this import", exclude_import=row.id)
        imports_repo.write_progress(session=session, import_id=row.id,
                                    progress={"objects": 0, "total": 0, "fraction": 0.0, "bytes": size})


def _download(row, work: Path) -> tuple[Path, str]:
    """-> (local archive, its file name)."""
    settings = get_settings()
    bucket, key = check_source(row.source, settings.IMPORT_ALLOWED_PREFIXES)
    store = S3ObjectStore(bucket)
    cap = settings.MAX_UPLOAD_BYTES
    if key.lower().endswith(ARCHIVES):
        dest = work / Path(key).name
        listed = [o.size for o in store.list(key) if o.key == key]
        if listed:  # the size before the download; else checked right after it
            _reserve(row, listed[0])
        try:
            store.get_file(key, dest)
        except ObjectMissingError:
            raise SourceError(f"source: no object at {row.source}") from None
        if dest.stat().st_size > cap:
            raise SourceError(f"source: {dest.stat().st_size} bytes exceeds HEADWISE_MAX_UPLOAD_BYTES={cap}")
        if not listed:
            _reserve(row, dest.stat().st_size)
        _progress(row.id, 1, 1, dest.stat().st_size)
        return dest, dest.name
    objects = [o for o in store.list(key) if not o.key.endswith("/")]
    names = {o.key[len(key):] for o in objects}
    if not names & set(LABELS):
        raise SourceError(f"source: {row.source} holds no labels.csv or labels.jsonl at its top level "
                         f"({len(objects)} object(s) found)")
    total = sum(o.size for o in objects)
    if total > cap:
        raise SourceError(f"source: {total} bytes under {row.source} exceeds HEADWISE_MAX_UPLOAD_BYTES={cap}")
    _reserve(row, total)
    archive = work / "import.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i, obj in enumerate(objects, 1):
            part = work / "part"
            store.get_file(obj.key, part)
            zf.write(part, obj.key[len(key):])
            part.unlink()
            if i % 50 == 0 or i == len(objects):
                _progress(row.id, i, len(objects), total)
    name = key.rstrip("/").rsplit("/", 1)[-1] or bucket
    return archive, f"{name}.zip"


def _progress_of(session, import_id: str) -> dict:
    from service.db.tables import DatasetImport

    return dict(session.get(DatasetImport, import_id).progress or {})


def _import(row) -> str:
    from service.api.ingest import Received, check_archive, dataset_name, store_dataset

    settings = get_settings()
    storage = storage_for(settings)
    work = Path(tempfile.mkdtemp(prefix="headwise-import-", dir=storage.ensure() or storage.tmp_dir))
    try:
        path, filename = _download(row, work)
        got = Received(path, filename, "npz" if filename.lower().endswith(".npz") else "zip", path.stat().st_size,
                       sha256_file(path))
        table, _ = check_archive(got, row.spec)  # the upload's checks: DataError / SpecError name row and column
        with session_scope() as session:
            # the reserved bytes become the dataset row in one transaction: checked again under the team's lock
            imports_repo.write_progress(session=session, import_id=row.id, progress={**_progress_of(session, row.id),
                                                                                     "bytes": 0})
            dataset = store_dataset(session, storage, got, table, team=row.team,
                                    name=dataset_name(row.name, filename), settings=settings)
            imports_repo.finish(session=session, import_id=row.id, status="succeeded", dataset_id=dataset.id)
            return dataset.id
    finally:
        shutil.rmtree(work, ignore_errors=True)
