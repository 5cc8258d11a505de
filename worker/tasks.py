"""Thin Celery tasks: ids in, logic in worker.jobs, state in the database. (The reaper is a thread of each
worker, worker.reaper.start_reaper_thread, not a task.)"""

from __future__ import annotations

from worker.app import app


@app.task(name="headwise.train", ignore_result=True, bind=True, max_retries=None)
def train(self, job_id: str) -> None:
    from service.observability import bind_job
    from worker.jobs import DatabaseUnavailableError, run_job

    try:
        with bind_job(job_id):  # every log record of this job (and its monitor thread) carries job_id
            run_job(job_id)
    except DatabaseUnavailableError as exc:
        # The message must not be consumed while the row could not be read: publish it again, backing off
        # (5 s, 10 s, ... at most 2 min); the claim makes a late or duplicate delivery harmless.
        raise self.retry(exc=exc, countdown=min(120, 5 * 2 ** min(self.request.retries, 5))) from exc



@app.task(name="headwise.import", ignore_result=True)
def import_dataset(import_id: str) -> str:
    """`POST /v1/datasets {"source": "s3://..."}`: download and validate (worker/imports.py)."""
    from worker.imports import run_import

    return run_import(import_id)
