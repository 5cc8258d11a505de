"""Prometheus metrics and structured logs. No fastapi here: the middleware and GET /metrics are in
service/api/metrics.py.

Metrics (one CollectorRegistry per app, so tests and several apps in one process do not collide):
  headwise_http_requests_total{method,route,status}            counter; route = the route template
  headwise_http_request_duration_seconds{method,route,status}  histogram
  headwise_http_requests_in_progress                           gauge
  headwise_predict_batch_images / headwise_predict_batch_requests   histograms: images / requests per network run
  headwise_predict_queue_wait_seconds                          histogram: submit -> batch start, per request
  headwise_predict_batch_seconds                               histogram: network run per batch
  headwise_predict_images_total, headwise_predict_overloaded_total   counters
  headwise_jobs{status}                                        gauge, read from the database at scrape time
  headwise_job_training_images_per_second{job_id,model}        gauge, latest history entry of each running job
  headwise_metrics_database_up                                 gauge, 0 when the scrape-time query failed

Logs: configure_logging(fmt) with HEADWISE_LOG_FORMAT=json|text (default text) and HEADWISE_LOG_LEVEL. Every
record carries request_id (set by the HTTP middleware from X-Request-ID, generated when absent) and job_id (set
by the worker with bind_job(job_id)); JSON lines have ts, level, logger, message, request_id?, job_id?, exc?
and any `extra=` fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from service.domain import JobStatus

log = logging.getLogger("headwise.observability")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# ---- request and job ids ------------------------------------------------------------------------------

request_id_var: ContextVar[str | None] = ContextVar("headwise_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("headwise_job_id", default=None)
_process_job_id: str | None = None  # fallback for threads a job starts (contextvars do not cross threads)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token (<= 128 of [A-Za-z0-9._:-]), else a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


@contextmanager
def bind_job(job_id: str) -> Iterator[None]:
    """Tag every log record of this job (in this context, and in threads it starts) with job_id."""
    global _process_job_id
    token, previous = job_id_var.set(job_id), _process_job_id
    _process_job_id = job_id
    try:
        yield
    finally:
        job_id_var.reset(token)
        _process_job_id = previous


class ContextFilter(logging.Filter):
    """Adds request_id and job_id (or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.job_id = job_id_var.get() or _process_job_id
        return True


# ---- logging ------------------------------------------------------------------------------------------

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "job_id", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in ("request_id", "job_id"):
            value = getattr(record, key, None)
            if value:
                out[key] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{k}={getattr(record, k)}" for k in ("request_id", "job_id") if getattr(record, k, None)]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def configure_logging(fmt: str = "text", level: str = "INFO", stream=None) -> str:
    """Install one handler on the root logger (replacing a previous one of ours). fmt and level come from
    Settings.LOG_FORMAT / LOG_LEVEL. In json mode uvicorn's and celery's loggers propagate to it and uvicorn's
    access log is replaced by `headwise.access` lines from the HTTP middleware. Idempotent; returns fmt."""
    fmt = fmt.strip().lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"HEADWISE_LOG_FORMAT must be 'json' or 'text', got {fmt!r}")
    level = level.upper()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler._headwise = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_headwise", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if fmt == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.worker"):
            lg = logging.getLogger(name)
            lg.handlers.clear()
            lg.propagate = True
        logging.getLogger("uvicorn.access").disabled = True
    return fmt


# ---- metrics ------------------------------------------------------------------------------------------

class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        labels = ["method", "route", "status"]
        self.http_requests = Counter("headwise_http_requests_total", "HTTP requests by route template and status",
                                     labels, registry=r)
        self.http_latency = Histogram("headwise_http_request_duration_seconds", "HTTP request latency", labels,
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.http_in_progress = Gauge("headwise_http_requests_in_progress", "HTTP requests being served",
                                      registry=r)
        self.batch_images = Histogram("headwise_predict_batch_images", "Images per network run (micro-batch)",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("headwise_predict_batch_requests", "Requests per network run",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("headwise_predict_queue_wait_seconds", "Time a request waited for its batch",
                                    buckets=WAIT_BUCKETS, registry=r)
        self.batch_seconds = Histogram("headwise_predict_batch_seconds", "Network run time per batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.predict_images = Counter("headwise_predict_images_total", "Images predicted", registry=r)
        self.overloaded = Counter("headwise_predict_overloaded_total", "Predict requests refused (queue full)",
                                  registry=r)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.http_requests.labels(*key).inc()
        self.http_latency.labels(*key).observe(seconds)

    def observe_batch(self, images: int, requests: int, waits: list[float], seconds: float) -> None:
        """The MicroBatcher on_batch hook."""
        self.batch_images.observe(images)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)
        self.predict_images.inc(images)
        for w in waits:
            self.queue_wait.observe(w)

    def watch_jobs(self, session_factory: Callable[[], object], ttl: float = 2.0) -> None:
        """Report jobs by status and running jobs' images/s, read through `session_factory` at scrape time."""
        self.registry.register(JobsCollector(session_factory, ttl))

    def render(self) -> tuple[bytes, str]:
        """-> (exposition text, content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def batch_observer(state) -> Callable[[int, int, list[float], float], None]:
    """A MicroBatcher on_batch hook reporting to `state.metrics` (looked up per call: set later by install)."""

    def observe(images: int, requests: int, waits: list[float], seconds: float) -> None:
        metrics = getattr(state, "metrics", None)
        if metrics is not None:
            metrics.observe_batch(images, requests, waits, seconds)

    return observe


class JobsCollector:
    """Scrape-time database reads (cached for `ttl` seconds so several scrapers cost one query)."""

    def __init__(self, session_factory: Callable[[], object], ttl: float = 2.0):
        self.session_factory, self.ttl = session_factory, ttl
        self._cached: tuple[float, dict[str, int], list, bool] | None = None
        self._lock = threading.Lock()

    def describe(self):
        return []  # no scrape at registration time

    def _read(self) -> tuple[dict[str, int], list, bool]:
        from service.db import jobs as jobs_repo
        now = time.monotonic()
        with self._lock:
            if self._cached and now - self._cached[0] < self.ttl:
                return self._cached[1:]
            try:
                with self.session_factory() as session:
                    counts = jobs_repo.count_jobs_by_status(session=session)
                    running = jobs_repo.running_jobs_history(session=session)
                ok = True
            except Exception:
                log.warning("metrics: could not read jobs from the database", exc_info=True)
                counts, running, ok = {}, [], False
            self._cached = (now, counts, running, ok)
            return counts, running, ok

    def collect(self):
        counts, running, ok = self._read()
        up = GaugeMetricFamily("headwise_metrics_database_up", "1 when the scrape-time database read worked")
        up.add_metric([], 1.0 if ok else 0.0)
        yield up
        if not ok:
            return
        jobs = GaugeMetricFamily("headwise_jobs", "Jobs by status", labels=["status"])
        for status in sorted(set(JobStatus) | set(counts)):
            jobs.add_metric([status], float(counts.get(status, 0)))
        yield jobs
        rate = GaugeMetricFamily("headwise_job_training_images_per_second",
                                 "Training throughput of running jobs (latest epoch)", labels=["job_id", "model"])
        for job_id, model, history in running:
            value = history[-1].get("images_per_second") if history and isinstance(history[-1], dict) else None
            if isinstance(value, int | float):
                rate.add_metric([job_id, model], float(value))
        yield rate
