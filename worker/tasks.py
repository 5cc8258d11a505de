"""Thin Celery tasks: ids in, logic in worker.jobs / worker.reaper, state in the database."""

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


@app.task(name="headwise.reap", ignore_result=True)
def reap() -> dict[str, int]:
    from worker.reaper import reap_stale_jobs

    return reap_stale_jobs()
