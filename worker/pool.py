"""Celery's prefork pool, replacing a finished job's child within half a second.

Every job runs in a fresh child (worker_max_tasks_per_child 1). When the next job's message reaches the parent
before the finished child has exited (the usual case with a queue), Celery's event-loop pool does not replace the
child when it exits but on its periodic pool check, every 5 s (celery/celery#9588, open): up to 5 s of idle
worker between jobs (4.9 s every time between trivial queued tasks, tests/worker/test_pool.py). This pool runs
that check every REPLACE_EVERY_SECONDS instead; a check only reaps exited children, so running it often costs
nothing measurable. (The embedded SQLite broker has no event loop; its blocking pool checks every 0.8 s already.)
"""

from __future__ import annotations

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool as PreforkPool

REPLACE_EVERY_SECONDS = 0.5
POOL = "worker.pool:TaskPool"  # Celery's worker_pool setting (worker/app.py)


class _EventLoopPool(AsynPool):
    @property
    def timers(self) -> dict:
        return {self.maintain_pool: REPLACE_EVERY_SECONDS}


class TaskPool(PreforkPool):
    """Celery's prefork TaskPool with _EventLoopPool (worker_pool = POOL)."""

    Pool = _EventLoopPool
