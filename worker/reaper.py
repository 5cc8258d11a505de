"""Requeue jobs whose worker vanished (lease = heartbeat older than JOB_LEASE_SECONDS).

A job whose worker was killed stays `running` with a heartbeat that stops moving. Once the heartbeat is older
than the lease, the reaper puts it back to `queued` and enqueues it again; the next attempt resumes from the
job's last epoch checkpoint (jobs/<id>/checkpoints). A job already attempted MAX_ATTEMPTS times is failed with
"worker lost N times" instead. Both transitions are conditional UPDATEs on (status, attempts, stale heartbeat),
so concurrent reapers (one per worker) and a late heartbeat from a slow-but-alive worker cannot double-requeue;
a worker whose job was requeued notices at its next heartbeat (it no longer owns the attempt) and stops.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from service.config import get_settings
from service.db import base as db
from service.db import imports as imports_repo
from service.db import jobs as jobs_repo
from service.db.base import session_scope
from service.queue import enqueue_import, enqueue_training, ping_broker, queued_messages

log = logging.getLogger("headwise.reaper")

_thread: threading.Thread | None = None
_stop = threading.Event()


def reap_stale_jobs(database_url: str | None = None) -> dict[str, int]:
    """One pass: returns {"requeued": n, "failed": n}."""
    settings = get_settings()
    counts = {"requeued": 0, "failed": 0}
    with session_scope(database_url) as session:
        # the database's clock (PostgreSQL), the one heartbeats are written with: no cross-host clock skew
        stale_before = db.db_now(session=session) - timedelta(seconds=settings.JOB_LEASE_SECONDS)
        stale = jobs_repo.stale_running_jobs(session=session, stale_before=stale_before)
    broker_up: bool | None = None
    for job_id, attempts in stale:
        if attempts >= settings.MAX_ATTEMPTS:
            error = (f"worker lost {attempts} times (no heartbeat for {settings.JOB_LEASE_SECONDS} s); "
                     f"giving up after HEADWISE_MAX_ATTEMPTS={settings.MAX_ATTEMPTS} attempts")
            with session_scope(database_url) as session:
                done = jobs_repo.finish_failed(session=session, job_id=job_id, error=error, attempt=attempts,
                                          stale_before=stale_before)
            if done:
                counts["failed"] += 1
                log.warning("job %s failed: %s", job_id, error)
                _remove_checkpoints(job_id)
            continue
        if broker_up is None:
            broker_up = ping_broker()
        if not broker_up:  # requeueing now would leave a queued job nobody is told about: wait a round
            log.warning("job %s: worker lost, but the broker is unreachable; requeue postponed", job_id)
            continue
        with session_scope(database_url) as session:
            won = jobs_repo.requeue_job(session=session, job_id=job_id, attempt=attempts, stale_before=stale_before)
        if not won:
            continue
        counts["requeued"] += 1
        log.warning("job %s: worker lost (attempt %d), requeued", job_id, attempts)
        try:
            enqueue_training(job_id)  # after the commit; if the broker is down, the row says queued
        except Exception as exc:  # noqa: BLE001
            log.error("job %s requeued but not enqueued (broker unreachable?): %s", job_id, exc)
    return counts


def ring_lost_doorbells(database_url: str | None = None) -> int:
    """Enqueue again the queued jobs whose message the broker lost (e.g. Redis restarted without persistence).

    The broker cannot say which job a message is for without consuming it, so: when it holds fewer waiting
    messages than there are queued jobs, every queued job not enqueued within the lease is enqueued again (its
    doorbell time, enqueued_at, is reset, so this repeats at most once per lease). A duplicate is harmless: the
    claim lets one delivery run the job and the others find nothing to do. Returns the number enqueued."""
    settings = get_settings()
    with session_scope(database_url) as session:
        rung_before = db.db_now(session=session) - timedelta(seconds=settings.JOB_LEASE_SECONDS)
        queued = jobs_repo.count_queued_jobs(session=session)
        stale = jobs_repo.stale_queued_jobs(session=session, rung_before=rung_before) if queued else []
        if stale:  # dataset imports' messages wait in the same queue
            queued += imports_repo.count_queued_imports(session=session)
    if not stale:
        return 0
    waiting = queued_messages()
    if waiting is None or waiting >= queued:
        return 0
    rung = 0
    for job_id in stale:
        with session_scope(database_url) as session:
            if not jobs_repo.ring_queued_job(session=session, job_id=job_id, rung_before=rung_before):
                continue
        try:
            enqueue_training(job_id)
            rung += 1
        except Exception as exc:  # noqa: BLE001 - broker down again: next round
            log.error("job %s: could not enqueue it again: %s", job_id, exc)
    if rung:
        log.warning("%d queued job(s) but %d message(s) in the broker: enqueued %d job(s) again", queued, waiting,
                    rung)
    return rung


def reap_stale_imports(database_url: str | None = None) -> dict[str, int]:
    """Dataset imports (worker/imports.py) get the jobs' treatment: a running import whose heartbeat is older than
    the lease is queued again and enqueued (failed after MAX_ATTEMPTS); a queued import nobody claimed within the
    lease is enqueued again, once per lease, when the broker holds fewer messages than there are queued jobs and
    imports (the API replica died between its commit and the enqueue, or the broker lost the message; a duplicate
    delivery finds nothing to claim). -> {"imports_requeued", "imports_failed",
    "imports_enqueued_again"}."""
    settings = get_settings()
    counts = {"imports_requeued": 0, "imports_failed": 0, "imports_enqueued_again": 0}
    with session_scope(database_url) as session:
        now = db.db_now(session=session)
        before = now - timedelta(seconds=settings.JOB_LEASE_SECONDS)
        stale = imports_repo.stale_running_imports(session=session, stale_before=before)
        unclaimed = imports_repo.unclaimed_imports(session=session, rung_before=before)
        queued = jobs_repo.count_queued_jobs(session=session) + imports_repo.count_queued_imports(session=session)
    if unclaimed:
        waiting = queued_messages()
        if waiting is None or waiting >= queued:  # every queued job/import still has its message
            unclaimed = []
    ring: list[str] = []
    for import_id, attempts in stale:
        with session_scope(database_url) as session:
            if attempts >= settings.MAX_ATTEMPTS:
                error = (f"worker lost {attempts} times (no heartbeat for {settings.JOB_LEASE_SECONDS} s); "
                         f"giving up after HEADWISE_MAX_ATTEMPTS={settings.MAX_ATTEMPTS} attempts")
                if imports_repo.fail_stale_import(session=session, import_id=import_id, attempt=attempts,
                                                  stale_before=before, error=error):
                    counts["imports_failed"] += 1
                    log.warning("import %s failed: %s", import_id, error)
                continue
            if imports_repo.requeue_import(session=session, import_id=import_id, attempt=attempts,
                                           stale_before=before):
                counts["imports_requeued"] += 1
                log.warning("import %s: worker lost (attempt %d), requeued", import_id, attempts)
                ring.append(import_id)
    for import_id in unclaimed:
        with session_scope(database_url) as session:
            if imports_repo.ring_import(session=session, import_id=import_id, rung_before=before):
                ring.append(import_id)
                counts["imports_enqueued_again"] += 1
    for import_id in ring:
        try:
            enqueue_import(import_id)  # after the commit; if the broker is down the next round rings again
        except Exception as exc:  # noqa: BLE001
            log.error("import %s queued but not enqueued (broker unreachable?): %s", import_id, exc)
    return counts


def _remove_checkpoints(job_id: str) -> None:
    from service.storage import storage_for

    storage = storage_for(get_settings())
    storage.remove(storage.job_dir(job_id))
    storage.unpublish(f"jobs/{job_id}")  # object storage (no-op without it)


SWEEP_SECONDS = 3600.0  # object storage orphan sweep: at most hourly per worker


def sweep_storage(grace_seconds: float | None = None) -> dict[str, int]:
    """Remove objects no database row points at (orphans of failed registrations, deleted rows). No-op without
    object storage."""
    from service.db.stored import live_paths, live_prefixes
    from service.storage import storage_for
    from service.storage.remote import SWEEP_GRACE_SECONDS

    storage = storage_for(get_settings())
    if storage.mirror is None:
        return {}
    with session_scope() as session:
        live, keep = live_paths(session=session), live_prefixes(session=session)
    return storage.mirror.sweep(live, SWEEP_GRACE_SECONDS if grace_seconds is None else grace_seconds, keep)


def _loop(interval: float) -> None:
    next_sweep = time.monotonic() + SWEEP_SECONDS / 10  # first sweep soon after start, then hourly
    while not _stop.wait(interval):
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + SWEEP_SECONDS
            try:
                sweep_storage()
            except Exception:  # noqa: BLE001 - the store is down: next time
                log.exception("storage sweep failed")
        try:
            counts = reap_stale_jobs()
            counts["enqueued_again"] = ring_lost_doorbells()
            counts.update(reap_stale_imports())
            if any(counts.values()):
                log.info("reaper: %s", counts)
        except Exception:  # noqa: BLE001 - database down etc.: try again next round
            log.exception("reaper pass failed")


def start_reaper_thread(interval: float) -> threading.Thread | None:
    """Start the periodic reaper (daemon thread) unless interval <= 0 or it already runs."""
    global _thread
    if interval <= 0 or (_thread is not None and _thread.is_alive()):
        return _thread
    _stop.clear()
    _thread = threading.Thread(target=_loop, args=(interval,), name="headwise-reaper", daemon=True)
    _thread.start()
    log.info("reaper thread started (every %.0f s, lease %d s, max attempts %d)", interval,
             get_settings().JOB_LEASE_SECONDS, get_settings().MAX_ATTEMPTS)
    return _thread


def stop_reaper_thread() -> None:
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=5)
    _thread = None
