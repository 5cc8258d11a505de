"""run_job: claim the job row -> load the dataset -> train -> store the artifact -> register the version.

The job row is the truth and the broker only a doorbell: a delivery claims the fairest queued job
(`claim_next_job`: the team served least recently first, then its oldest job), moving it queued -> running
atomically; every queued job has one message, so each is claimed once, and a second delivery of the same
message (redelivery, a reaper re-enqueue racing the original) finds nothing left to do.
Training runs under a hard memory limit (worker/limits.py); an out-of-memory error, or a full disk, ends the
job failed at once (it is deterministic: no retries) with a message naming what to change.
The attempt number taken by the claim fences every later write (see service/db/jobs.py). torch and the engine
are imported here, lazily, so the Celery parent process never loads torch or touches CUDA; with
max-tasks-per-child 1 each job runs in a fresh child.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from sqlalchemy.exc import DBAPIError

from service.config import Settings, get_settings
from service.db import jobs as jobs_repo
from service.db.base import session_scope
from service.db.tables import Dataset, Job, ModelVersion
from service.storage import Storage, storage_for
from service.storage.local import is_disk_full
from worker import limits
from worker.checkpoints import CheckpointSync, forget
from worker.compare import is_comparison, run_comparison
from worker.errors import JobError
from worker.monitor import CANCELLED, LEASE_LOST, TIMEOUT, JobMonitor
from worker.ranks import RanksFailed, processes_for, save_init, train_ranks
from worker.register import store_and_register

log = logging.getLogger("headwise.worker")

RELEASED = "released"  # the attempt's training processes died: the job is queued again and resumes


def worker_name() -> str:
    """The registry id of the worker whose pool runs this process (worker/presence.py), else host:pid."""
    return os.environ.get("HEADWISE_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: str) -> str:
    """Run one delivery of job `job_id`. Returns what happened: "skipped" (not claimable), "succeeded",
    "failed", "cancelled" or "lease_lost" (this attempt was requeued elsewhere; row left alone)."""
    settings = get_settings()
    storage = storage_for(settings)
    budget = settings.WORKER_MEMORY_BYTES
    try:
        with session_scope() as session:
            job = jobs_repo.claim_next_job(session=session, delivered=job_id, worker=worker_name(), budget=budget)
            if job is None:
                status = jobs_repo.job_status(session=session, job_id=job_id)
            else:
                dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
                session.expunge_all()
    except DBAPIError as exc:  # database down: nothing happened; the task retries this delivery later
        raise DatabaseUnavailableError(f"cannot claim job {job_id}: {exc.orig}") from exc
    if job is None:
        log.info("job %s not claimable (status %s): delivery ignored", job_id, status or "unknown")
        if status == "cancelled":
            _cleanup(storage, job_id)
        elif status == "queued":
            _pass_on(job_id, budget, settings)
        return "skipped"
    if job.id != job_id:
        log.info("delivery of job %s runs job %s (fair order across teams)", job_id, job.id)
    from service.observability import bind_job

    with bind_job(job.id):
        return _run_claimed(job, dataset, settings, storage)


def _pass_on(job_id: str, budget: int, settings: Settings) -> None:
    """The delivered job is over this worker's memory budget and nothing else fits here: ring its doorbell again
    (after a heartbeat's pause: small workers do not toss it back and forth in a tight loop while the large one
    is busy) when a live worker with a larger budget could take it; otherwise it waits, saying why
    (GET /v1/jobs/{id} status_detail), and the reaper rings again once such a worker is alive."""
    from service.db import workers as workers_repo
    from service.queue import enqueue_training

    try:
        with session_scope() as session:
            need = jobs_repo.job_memory(session=session, job_id=job_id)
            budgets = workers_repo.alive_budgets(session=session, lease_seconds=settings.JOB_LEASE_SECONDS)
    except DBAPIError as exc:  # the reaper rings lost doorbells again
        log.warning("job %s: could not check who can take it: %s", job_id, exc)
        return
    if need is None or need <= budget:
        return
    if any(b is not None and b >= need for b in budgets):
        log.info("job %s needs ~%d bytes, over this worker's budget %d: passed on", job_id, need, budget)
        time.sleep(settings.HEARTBEAT_SECONDS)
        try:
            enqueue_training(job_id)
        except Exception as exc:  # noqa: BLE001 - broker down: the reaper rings lost doorbells again
            log.warning("job %s: could not pass it on: %s", job_id, exc)
    else:
        log.info("job %s needs ~%d bytes; no live worker's budget fits it: it waits", job_id, need)


def _run_claimed(job: Job, dataset: Dataset | None, settings: Settings, storage: Storage) -> str:
    log.info("job %s claimed (attempt %d) by %s", job.id, job.attempts, job.worker)
    # The lease is renewed from right after the claim: importing torch and decoding the dataset into the
    # image cache can take longer than the lease.
    monitor = JobMonitor(job.id, job.attempts, _training_hint(job.spec, "epochs"), settings, history=job.history,
                         batch_size=_training_hint(job.spec, "batch_size")).start()
    try:
        with limits.host_memory_limit(settings):
            outcome = _run_kind(job, dataset, settings, storage, monitor)
    except RanksFailed as exc:  # several processes: one died -> the next attempt resumes from the checkpoint
        monitor.close(flush=True)
        outcome = _release(job, exc, settings)
    except Exception as exc:
        monitor.close(flush=True)
        outcome = _fail(job, exc)
    finally:
        monitor.close(flush=True)
    if outcome not in (LEASE_LOST, RELEASED):
        _cleanup(storage, job.id)
    return outcome


def _limit_device(spec: Any, device: str, settings: Settings) -> str:
    """The device training will use, with its memory limit: CUDA -> the allocator's fraction (and host memory
    unlimited again: CUDA maps large host areas); CPU -> the RLIMIT_DATA set around the job stays."""
    from service.ml.train import resolve_device

    dev = resolve_device(device, spec)
    if dev.type == "cuda":
        limits.lift_host_limit()
        limits.limit_cuda(settings, dev)
    return dev.type


class DatabaseUnavailableError(Exception):
    """The job could not even be claimed because the database is unreachable (the task retries later)."""


def _training_hint(spec: Any, field: str) -> int:
    """spec.training.<field> as an int for progress reports (0 when absent: the engine applies its default)."""
    try:
        return int(spec["training"][field])
    except (KeyError, TypeError, ValueError):
        return 0


def _run_kind(job: Job, dataset: Dataset | None, settings: Settings, storage: Storage, monitor: JobMonitor) -> str:
    if job.kind == "batch_predict":
        from worker.batch_predict import run_batch_predict

        return run_batch_predict(job, dataset, settings, storage, monitor)
    if job.kind == "evaluate":
        from worker.evaluate import run_evaluate

        return run_evaluate(job, dataset, settings, storage, monitor)
    return _train_and_register(job, dataset, settings, storage, monitor)


def _train_and_register(job: Job, dataset: Dataset | None, settings: Settings, storage: Storage,
                        monitor: JobMonitor) -> str:
    if dataset is None:
        raise JobError("the job's dataset no longer exists (it was deleted)")
    from service.ml.data import load_training_data
    from service.ml.spec import parse_spec
    from service.ml.train import TrainingCancelled, checkpoint_history, train

    started = time.monotonic()
    spec = parse_spec(job.spec)
    monitor.epochs = spec.training.planned_epochs(dataset.num_samples)  # "auto" resolved; may shrink (budget)
    device = spec.training.device if spec.training.device != "auto" else settings.TRAIN_DEVICE
    failure = None
    try:
        dev = _limit_device(spec, device, settings)
        spec, data = load_training_data(spec, storage.abs(dataset.path), storage.dataset_cache_dir(dataset.id))
        if monitor.should_stop():
            raise TrainingCancelled("stopped before training started")
        init = _warm_start(job, storage)
        sync = CheckpointSync(storage, job.id)  # object storage: resume on another host (no-op without it)
        sync.restore()
        for item in checkpoint_history(storage.checkpoint_dir(job.id)):  # the row's history may lag it
            monitor.on_epoch(item)

        def on_epoch(item: dict[str, Any]) -> None:
            monitor.on_epoch(item)
            sync.after_epoch(int(item.get("epoch", 0)))

        try:
            try:
                processes = processes_for(spec, dev)
            except ValueError as exc:  # names training.devices and what this worker has
                raise JobError(str(exc)) from None
            if is_comparison(job):  # the main spec and its variants as sub-runs (worker/compare.py)
                result = run_comparison(job, spec, data, storage, monitor, device, settings.WEIGHTS_DIR, init)
            elif processes > 1:  # training.devices: torchrun + DistributedDataParallel (worker/ranks.py)
                request = {"spec": spec.to_json_dict(), "data": str(storage.abs(dataset.path)),
                           "cache_dir": str(storage.dataset_cache_dir(dataset.id)), "device": dev,
                           "checkpoint_dir": str(storage.checkpoint_dir(job.id)),
                           "weights_dir": str(settings.WEIGHTS_DIR) if settings.WEIGHTS_DIR else None,
                           "init": save_init(init, storage.job_dir(job.id))}
                result = train_ranks(processes, request, storage.job_dir(job.id), on_epoch=on_epoch,
                                     on_step=monitor.on_step, should_stop=monitor.should_stop)
            else:
                result = train(spec, data, device=device, on_epoch=on_epoch, on_step=monitor.on_step,
                               should_stop=monitor.should_stop, checkpoint_dir=storage.checkpoint_dir(job.id),
                               weights_dir=settings.WEIGHTS_DIR, init=init)
        finally:
            sync.close()
    except TrainingCancelled:
        monitor.close(flush=True)
        return _stopped(job, monitor.stop_reason or CANCELLED, settings)
    except (MemoryError, RuntimeError, OSError) as exc:
        if limits.is_out_of_memory(exc):
            failure = limits.oom_message(spec, dataset.num_samples, settings, dev, f"{type(exc).__name__}: {exc}")
        elif is_disk_full(exc):
            failure = f"the disk is full: training could not write its image cache or checkpoint ({exc})"
        else:
            raise
    if failure is not None:  # raised here, outside the handler: the failed step's tensors are freed first
        import gc

        gc.collect()
        raise JobError(failure)
    log.info("job %s trained %d epochs in %.1f s", job.id, len(result.history), time.monotonic() - started)

    return store_and_register(job, result, data, settings, storage, monitor)


def _warm_start(job: Job, storage: Storage) -> tuple | None:
    """training.init_from, resolved by the API into params["init_from"] (the version row's id): (parent spec,
    parent weights, {"model", "version"}) for service.ml.warm_start, or None."""
    ref = (job.params or {}).get("init_from")
    if not ref:
        return None
    from service.ml.artifact import load_artifact

    with session_scope() as session:
        mv = session.get(ModelVersion, ref.get("model_version_id", ""))
        path = mv.artifact_path if mv is not None else None
    if path is None:
        raise JobError(f"training.init_from: model '{ref.get('model')}' version {ref.get('version')} no longer "
                        "exists (it was deleted after the job was queued)")
    parent = load_artifact(storage.abs(path))
    return parent.spec, parent.state_dict, {"model": ref.get("model"), "version": ref.get("version")}


def _stopped(job: Job, reason: str, settings: Settings) -> str:
    if reason == LEASE_LOST:
        return LEASE_LOST
    with session_scope() as session:
        if reason == TIMEOUT:
            error = f"training exceeded HEADWISE_MAX_JOB_SECONDS={settings.MAX_JOB_SECONDS} and was stopped"
            done = jobs_repo.finish_failed(session=session, job_id=job.id, attempt=job.attempts, error=error)
            outcome = "failed"
        else:
            done = jobs_repo.finish_cancelled(session=session, job_id=job.id, attempt=job.attempts)
            outcome = "cancelled"
    log.info("job %s %s", job.id, outcome)
    return outcome if done else LEASE_LOST


def _client_error_types() -> tuple[type[BaseException], ...]:
    """Errors whose message is written for the user (engine validation errors, JobError)."""
    types: list[type[BaseException]] = [JobError]
    try:
        from service.ml.spec import SpecError

        types.append(SpecError)
        from service.ml.data import DataError

        types.append(DataError)
    except ImportError:  # the engine failed to import: that error is reported as "<Type>: <msg>"
        pass
    return tuple(types)


def error_message(exc: BaseException) -> str:
    """User-facing error: engine validation errors and JobError as they are, anything else "<Type>: <msg>"."""
    if isinstance(exc, _client_error_types()):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(job: Job, exc: Exception) -> str:
    message = error_message(exc)
    if isinstance(exc, _client_error_types()):
        log.info("job %s failed: %s", job.id, message)
    else:
        log.error("job %s failed: %s", job.id, message, exc_info=exc)
    with session_scope() as session:
        done = jobs_repo.finish_failed(session=session, job_id=job.id, attempt=job.attempts, error=message[:4000])
    return "failed" if done else LEASE_LOST


def _release(job: Job, exc: Exception, settings: Settings) -> str:
    """A training process died: queue the job again (its checkpoints stay) unless its attempts are used up."""
    if job.attempts >= settings.MAX_ATTEMPTS:
        return _fail(job, JobError(f"{exc}; giving up after HEADWISE_MAX_ATTEMPTS={settings.MAX_ATTEMPTS} attempts"))
    with session_scope() as session:
        released = jobs_repo.release_job(session=session, job_id=job.id, attempt=job.attempts)
    if not released:
        return LEASE_LOST
    log.warning("job %s: attempt %d failed (%s); queued again, it resumes from its checkpoint", job.id,
                job.attempts, exc)
    from service.queue import enqueue_training

    try:
        enqueue_training(job.id)
    except Exception as err:  # noqa: BLE001 - the reaper rings lost doorbells (worker/reaper.py)
        log.error("job %s queued again but not enqueued (broker unreachable?): %s", job.id, err)
    return RELEASED


def _cleanup(storage: Storage, job_id: str) -> None:
    """A finished job needs no checkpoints (here or in object storage)."""
    storage.remove(storage.job_dir(job_id))
    forget(storage, job_id)
