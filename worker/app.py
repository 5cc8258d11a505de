"""The worker's Celery app: `celery -A worker.app worker -Q gpu --concurrency 1` (what `headwise worker` runs).

- acks_late + prefetch 1 + reject_on_worker_lost: a message is acknowledged only after its job ended, and a
  worker takes one job at a time. The Redis visibility timeout is longer than the longest allowed run.
- max_tasks_per_child 1: every job runs in a fresh child process; the parent never imports torch or touches
  CUDA, and a job's memory is returned to the OS when it ends.
- No result backend: the job row is the result.
- The reaper (worker/reaper.py) runs as a daemon thread in the worker's MAIN process, started on
  `worker_ready`; it only uses the database and the producer, so it works with every broker (Redis or the
  embedded SQLite one) and needs no celery beat. Every worker runs one; their updates are conditional, so
  two reapers never requeue the same job twice.
- worker/presence.py registers the worker and heartbeats it (GET /v1/workers, /ready's worker count).
"""

from __future__ import annotations

import logging

from celery import Celery, signals

from service.config import get_settings
from service.queue import TRAIN_QUEUE, broker_options
from worker.pool import POOL

log = logging.getLogger("headwise.worker")


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("headwise-worker", include=["worker.tasks"])
    app.conf.update(broker_options(settings.BROKER_URL, settings.visibility_timeout))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        worker_pool=POOL,  # prefork, replacing a finished job's child at once (worker/pool.py)
        task_default_queue=TRAIN_QUEUE,
        task_ignore_result=True,
        result_backend=None,
        worker_hijack_root_logger=False,
        # Training may run for hours; no Celery time limit (jobs enforce MAX_JOB_SECONDS themselves).
        task_time_limit=None,
        task_soft_time_limit=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


app = make_app()


@signals.after_setup_logger.connect
def _structured_logs(logger=None, **_kwargs) -> None:
    """HEADWISE_LOG_FORMAT=json: the worker logs JSON lines (with job_id) through the service's one handler."""
    from service.observability import configure_logging

    settings = get_settings()
    if settings.LOG_FORMAT == "json" and logger is not None:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        configure_logging("json", settings.LOG_LEVEL)


@signals.worker_process_init.connect
def _fresh_connections_in_child(**_kwargs) -> None:
    """A forked child must not reuse the parent's pooled database connections (the presence and reaper
    threads'). os.fork already did this (service/db/base.py registers it at fork); again here, harmlessly,
    for a pool that forks some other way."""
    from service.db.base import dispose_inherited_engines

    dispose_inherited_engines()
    _preload_engine()


# what a job imports after training too: the ONNX export and the version's reports (matplotlib, ~0.3 s)
# torch._inductor.config: torch.use_deterministic_algorithms(), which every CPU training run calls, imports it and
# with it TorchDynamo: 1.2 s here (cProfile of a tiny job's first train() call), paid after the claim when it was
# not preloaded
ENGINE_MODULES = ("service.ml.train", "service.ml.data", "service.ml.artifact", "service.ml.export",
                  "service.reports.version", "service.reports.plots", "torch._inductor.config")


def _preload_engine() -> None:
    """In the child, before it takes a job: import torch and the engine (about 1.2 s on 2 cores) in a daemon
    thread, so a job's claim is not followed by that import. A job arriving meanwhile simply waits for the same
    imports (Python's per-module import locks). The parent never runs this: it stays torch-free. CUDA is not
    touched (importing torch does not initialise it)."""
    import importlib
    import threading

    def run() -> None:
        for name in ENGINE_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the job reports a broken engine itself
                log.warning("preloading %s failed", name, exc_info=True)
                return

    threading.Thread(target=run, name="headwise-preload", daemon=True).start()


_queues: list[str] = []


@signals.worker_init.connect
def _name_worker(sender=None, **_kwargs) -> None:
    """Before the pool forks: fix this worker's registry id (children claim jobs under it) and its memory
    budget (worker/limits.py resolve_worker_budget: a CUDA worker's default follows its GPU)."""
    import os

    from worker import limits, presence

    settings = get_settings()
    budget = limits.resolve_worker_budget(settings)
    if budget != settings.WORKER_MEMORY_BYTES:
        os.environ["HEADWISE_WORKER_MEMORY_BYTES"] = str(budget)
        get_settings.cache_clear()
        log.info("memory budget %d bytes (%.0f%% of this worker's GPU; %s not set)", budget,
                 100 * limits.GPU_FRACTION, limits.SETTING)

    try:
        _queues[:] = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    except Exception:  # noqa: BLE001 - the list is informative only
        _queues[:] = [TRAIN_QUEUE]
    presence.start_id()


@signals.worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    from worker import presence
    from worker.reaper import start_reaper_thread

    presence.start(_queues or [TRAIN_QUEUE])
    start_reaper_thread(get_settings().REAPER_SECONDS)
    try:  # a worker-only host runs no API, whose start sweeps tmp/: imports of a killed worker left their files
        from service.storage import storage_for

        removed = storage_for(get_settings()).sweep_tmp()
        if removed:
            log.info("removed %d stale entries of tmp/ (left by killed processes)", removed)
    except Exception:  # noqa: BLE001 - housekeeping only
        log.exception("sweeping tmp/ failed")


@signals.worker_shutdown.connect
def _stop_reaper(**_kwargs) -> None:
    from worker import presence
    from worker.reaper import stop_reaper_thread

    stop_reaper_thread()
    presence.stop()
