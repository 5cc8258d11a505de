"""After training: the artifact (weights, the checked model.onnx, the version's reports) written to a temporary
directory, then ONE transaction marks the job succeeded and adds the next model version, with the artifact
directory renamed into place (and stored in object storage) while the version number is locked, and taken out
again when the transaction surely did not commit. Conflicts are retried; an ambiguous COMMIT is checked."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from service.config import Settings
from service.db import registry as registry_repo
from service.db.base import get_sessionmaker, session_scope
from service.db.tables import Job
from service.storage import Storage
from service.storage.local import is_disk_full
from worker.compare import is_comparison, write_plot
from worker.errors import JobError
from worker.extras import export_onnx, write_reports
from worker.monitor import LEASE_LOST, JobMonitor, jsonable

log = logging.getLogger("headwise.worker")

REGISTER_TRIES = 5


def store_and_register(job: Job, result: Any, data: Any, settings: Settings, storage: Storage,
                       monitor: JobMonitor) -> str:
    """Write the artifact of a trained job and register it -> "succeeded", or LEASE_LOST when another attempt
    owns the job now. A full disk fails the job (nothing registered, the temporary directory removed)."""
    from service.ml.artifact import save_artifact

    tmp = storage.new_tmp_path(f"-artifact-{job.id}")
    try:
        extra_files, extra_meta = export_onnx(result, data, settings)
        try:
            checksums = save_artifact(result, tmp, extra_files=extra_files, extra_meta=extra_meta)
            write_reports(job, result, data, tmp)
            if is_comparison(job):
                write_plot(job, tmp)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise JobError(f"the disk is full: the model artifact could not be written ({exc}); "
                           "nothing was registered") from None
        monitor.close(flush=True)  # no more heartbeats: the next write is the final transaction
        if monitor.stop_reason == LEASE_LOST:
            return LEASE_LOST
        last_epoch = result.history[-1].get("epoch", len(result.history)) if result.history else 0
        if is_comparison(job):  # the progress bar spans every sub-run
            last_epoch = monitor.epochs
        registered = register_version(job, result, checksums, tmp, storage,
                                      {"epoch": last_epoch, "epochs": monitor.epochs, "fraction": 1.0})
    finally:
        storage.remove(tmp)
    if registered is None:
        log.error("job %s: attempt %d lost its lease before registering; artifact discarded",
                  job.id, job.attempts)
        return LEASE_LOST
    log.info("job %s succeeded: model %s version %d", job.id, job.model_name, registered)
    return "succeeded"


def register_version(job: Job, result: Any, checksums: dict[str, str], tmp: Path, storage: Storage,
              progress: dict[str, Any]) -> int | None:
    """One transaction: job succeeded + next model version. The artifact dir is renamed into place inside it
    (while the version number is locked) and taken out again when the transaction surely did not commit.
    Conflicts (unique violations, SQLite busy) are retried. Returns the version number, None if the lease
    was lost."""
    spec_json = result.spec.to_json_dict()
    metrics, history = jsonable(result.metrics), jsonable(result.history)
    if result.warm_start is not None:
        metrics["warm_start"] = jsonable(result.warm_start)
    for attempt in range(1, REGISTER_TRIES + 1):
        final: Path | None = None
        session = get_sessionmaker()()
        try:
            version = registry_repo.finish_succeeded(
                session=session, job_id=job.id, attempt=job.attempts, spec=spec_json, metrics=metrics,
                history=history, checksums=checksums, progress=progress,
                parent=result.warm_start["parent"] if result.warm_start is not None else None,
                artifact_path=lambda model_id, number: storage.rel(storage.artifact_dir(model_id, number)),
            )
            if version is None:
                session.rollback()
                return None
            number = version.version
            final = storage.local(version.artifact_path)
            if final.exists():  # left by a crash between rename and commit; the version lock is ours
                storage.remove(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            _publish(storage, final, job.id)  # every file stored before the version row commits
        except (IntegrityError, OperationalError) as exc:  # before COMMIT: nothing was written
            session.rollback()
            session.close()
            _unplace(final, tmp)
            if attempt == REGISTER_TRIES:
                raise
            log.warning("job %s: registering the version conflicted (%s); retrying", job.id, exc.orig)
            time.sleep(0.1 * attempt)
            continue
        except BaseException:
            session.rollback()
            session.close()
            _unplace(final, tmp)
            raise
        try:
            session.commit()
            return number
        except BaseException:
            session.rollback()
            committed = _registered_version(job.id)  # a COMMIT that raised may still have committed
            if committed is False:
                _unplace(final, tmp)
            elif committed is True:
                log.warning("job %s: COMMIT raised but the version is recorded; keeping it", job.id)
                return number
            raise
        finally:
            session.close()
    return None


def _publish(storage: Storage, final: Path, job_id: str) -> None:
    """Upload the artifact to object storage (no-op without one), retrying a flaky store a few times; raises
    ObjectStoreUnavailableError at last (the job then fails; nothing is registered)."""
    from service.storage.objects import ObjectStoreUnavailableError

    for attempt in range(1, REGISTER_TRIES + 1):
        try:
            storage.publish(final)
            return
        except ObjectStoreUnavailableError as exc:
            if attempt == REGISTER_TRIES:
                raise
            log.warning("job %s: storing the artifact failed (%s); retrying", job_id, exc)
            time.sleep(min(10.0, 0.5 * 2 ** attempt))


def _registered_version(job_id: str) -> bool | None:
    """After an ambiguous COMMIT: True/False whether the job's version exists, None if we cannot tell (then
    the artifact stays: an orphan directory is harmless, a version without files is not)."""
    try:
        with session_scope() as session:
            return job_id in registry_repo.job_versions(session=session, job_ids=[job_id])
    except Exception:  # noqa: BLE001
        return None


def _unplace(final: Path | None, tmp: Path) -> None:
    """Move a placed artifact back to its staging path (removed by the caller)."""
    if final is not None and final.exists() and not tmp.exists():
        os.replace(final, tmp)
