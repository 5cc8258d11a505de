"""Producer side of the broker: the API (and the reaper) enqueue work by task NAME; never imports worker/.

The broker is only a doorbell: the job row in the database is the truth, so a lost or duplicated message is
harmless (the worker's atomic claim ignores duplicates; the worker's reaper re-enqueues jobs whose worker died).
Enqueue only after the job row is committed.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from service.config import get_settings

log = logging.getLogger("headwise.queue")

TRAIN_TASK = "headwise.train"
IMPORT_TASK = "headwise.import"
TRAIN_QUEUE = "gpu"


def broker_options(broker_url: str, visibility_timeout: int) -> dict:
    """Celery settings shared by the producer and the worker apps."""
    if broker_url.startswith("sqla+"):  # embedded: these options go to sqlalchemy.create_engine
        transport_options: dict = {"connect_args": {"timeout": 30}}
    else:  # redis (and other virtual transports): redeliver unacked messages only after the longest run
        transport_options = {"visibility_timeout": visibility_timeout}
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": TRAIN_QUEUE,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Fail fast when the broker is down instead of blocking the caller: the job row stays queued.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                                      "interval_max": 1},
        "broker_connection_timeout": 4,
    }


@lru_cache
def get_producer(broker_url: str | None = None) -> Celery:
    settings = get_settings()
    app = Celery("headwise-producer", set_as_current=False)
    app.conf.update(broker_options(broker_url or settings.BROKER_URL, settings.visibility_timeout))
    return app


def enqueue_training(job_id: str) -> None:
    """Ring the doorbell for a committed, queued job. Raises the broker's error when it is unreachable."""
    get_producer().send_task(TRAIN_TASK, args=[job_id], queue=TRAIN_QUEUE, ignore_result=True)
    log.info("enqueued job %s", job_id)


def enqueue_import(import_id: str) -> None:
    """Ring the doorbell for a committed dataset import (a worker downloads and validates it)."""
    get_producer().send_task(IMPORT_TASK, args=[import_id], queue=TRAIN_QUEUE, ignore_result=True)
    log.info("enqueued dataset import %s", import_id)


def ping_broker(timeout: float = 2) -> bool:
    """True when the broker accepts a connection within timeout seconds."""
    try:
        with get_producer().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        log.warning("broker not reachable: %s", exc)
        return False


def queued_messages(timeout: float = 2) -> int | None:
    """Messages waiting in the training queue (not yet taken by a worker); None when the broker cannot say."""
    from kombu.exceptions import ChannelError

    try:
        with get_producer().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            try:
                return int(conn.default_channel.queue_declare(queue=TRAIN_QUEUE, passive=True).message_count)
            except ChannelError:  # no such queue (Redis drops empty lists): nothing waiting
                return 0
    except Exception as exc:  # noqa: BLE001 - unknown is "do nothing" for the caller
        log.warning("could not count queued messages: %s", exc)
        return None
