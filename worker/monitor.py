"""JobMonitor: the only thing that talks to the database while a job trains.

The training loop calls `on_epoch` / `should_stop`, which only touch memory. A background thread
- polls the cancel flag at most every CANCEL_POLL_SECONDS (should_stop returns the cached answer),
- writes progress (per step: epoch = last completed epoch, fraction inside the current one) + history at
  most every PROGRESS_SECONDS (the last state is flushed on close),
- otherwise renews the lease (heartbeat_at) every HEARTBEAT_SECONDS,
- notices a lost lease (the reaper requeued the job: our attempt no longer owns the row) and a run that
  exceeded MAX_JOB_SECONDS, and asks training to stop.
So training never waits on the database and a 1,000-epoch run writes a handful of rows, not 1,000.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from service.config import Settings
from service.db import jobs as jobs_repo
from service.db.base import session_scope

log = logging.getLogger("headwise.worker")

CANCELLED, LEASE_LOST, TIMEOUT = "cancelled", "lease_lost", "timeout"


class JobMonitor:
    def __init__(self, job_id: str, attempt: int, epochs: int, settings: Settings,
                 history: list[dict[str, Any]] | None = None, batch_size: int = 0):
        self.job_id, self.attempt, self.epochs, self.batch_size = job_id, attempt, epochs, batch_size
        self.settings = settings
        self.history: list[dict[str, Any]] = list(history or [])
        self.progress: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.writes = 0  # database writes made (progress + heartbeats), for tests and logs
        self._lock = threading.Lock()
        self._dirty = False  # progress changed since the last write
        self._history_dirty = False  # history changed (a new epoch) since the last write
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._deadline = time.monotonic() + settings.MAX_JOB_SECONDS
        self._last_progress = 0.0
        self._pace: tuple[int, int, float] | None = None  # (epoch, batches done, time) at the first step seen
        self._last_beat = time.monotonic()
        self._next_poll = 0.0
        self._thread = threading.Thread(target=self._run, name=f"headwise-monitor-{job_id[:8]}", daemon=True)

    # ---- called from the training loop (memory only) -------------------------------------------------
    def on_epoch(self, item: dict[str, Any]) -> None:
        epoch = int(item.get("epoch", len(self.history) + 1))
        self.epochs = int(item.get("epochs") or self.epochs)  # the trainer's plan (epochs "auto", time budget)
        with self._lock:
            self.history = [h for h in self.history if h.get("epoch") != epoch] + [item]
            self.history.sort(key=lambda h: h.get("epoch", 0))
            self.progress = {"epoch": epoch, "epochs": self.epochs,
                             "fraction": round(min(1.0, epoch / max(self.epochs, 1)), 4)}
            self._dirty = self._history_dirty = True
        if time.monotonic() - self._last_progress >= self.settings.PROGRESS_SECONDS:
            self._wake.set()

    def on_step(self, item: dict[str, Any]) -> None:
        """Called before each training step: progress inside the epoch (written with the next flush, so at most
        every PROGRESS_SECONDS): `batch` of `batches` done, and from the pace since the epoch's first step seen,
        images_per_second and eta_seconds (the rest of the run at that pace, validation not counted)."""
        epochs = max(self.epochs, 1)
        epoch, step, steps = int(item.get("epoch", 1)), int(item.get("step", 1)), max(int(item.get("steps", 1)), 1)
        done_batches, now = step - 1, time.monotonic()
        if self._pace is None or self._pace[0] != epoch:
            self._pace = (epoch, done_batches, now)
        progress: dict[str, Any] = {"fraction": round(min(1.0, (epoch - 1 + done_batches / steps) / epochs), 4),
                                    "batch": done_batches, "batches": steps}
        batches, seconds = done_batches - self._pace[1], now - self._pace[2]
        if batches > 0 and seconds > 0:
            per_second = batches / seconds
            if self.batch_size:
                progress["images_per_second"] = round(per_second * self.batch_size, 1)
            progress["eta_seconds"] = round((steps - done_batches + (self.epochs - epoch) * steps) / per_second, 1)
        with self._lock:
            completed = self.progress.get("epoch", len(self.history))
            self.progress = {"epoch": completed, "epochs": self.epochs, **progress}
            self._dirty = True

    def should_stop(self) -> bool:
        return self.stop_reason is not None

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> JobMonitor:
        self._thread.start()
        return self

    def close(self, flush: bool = True) -> None:
        """Stop the thread; with flush, write pending progress (the last epoch) once more. Idempotent."""
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if flush and self._dirty and self.stop_reason != LEASE_LOST:
            try:
                self._write_progress()
            except Exception:  # noqa: BLE001 - the final state is written by the caller anyway
                log.exception("job %s: final progress write failed", self.job_id)

    # ---- background thread --------------------------------------------------------------------------
    def _run(self) -> None:
        tick = min(self.settings.CANCEL_POLL_SECONDS, self.settings.HEARTBEAT_SECONDS,
                   max(self.settings.PROGRESS_SECONDS, 0.05))
        while not self._closed.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - database hiccup: keep training, retry next tick
                log.warning("job %s: monitor could not reach the database: %s", self.job_id, exc)

    def _tick(self) -> None:
        now = time.monotonic()
        if now >= self._deadline and self.stop_reason is None:
            log.error("job %s: exceeded HEADWISE_MAX_JOB_SECONDS=%d", self.job_id, self.settings.MAX_JOB_SECONDS)
            self.stop_reason = TIMEOUT
        if now >= self._next_poll:
            self._next_poll = now + self.settings.CANCEL_POLL_SECONDS
            with session_scope() as session:
                if jobs_repo.is_cancel_requested(session=session, job_id=self.job_id) and self.stop_reason is None:
                    log.info("job %s: cancel requested", self.job_id)
                    self.stop_reason = CANCELLED
        if self._dirty and now - self._last_progress >= self.settings.PROGRESS_SECONDS:
            self._write_progress()
        elif now - self._last_beat >= self.settings.HEARTBEAT_SECONDS:
            with session_scope() as session:
                owned = jobs_repo.heartbeat(session=session, job_id=self.job_id, attempt=self.attempt)
            self.writes += 1
            self._last_beat = now
            if not owned:
                self._lease_lost()

    def _write_progress(self) -> None:
        with self._lock:
            progress = dict(self.progress)
            history = list(self.history) if self._history_dirty else None  # rewritten only per new epoch
            self._dirty = self._history_dirty = False
        try:
            with session_scope() as session:
                owned = jobs_repo.write_progress(session=session, job_id=self.job_id, attempt=self.attempt,
                                            progress=progress,
                                            history=jsonable(history) if history is not None else None)
        except Exception:
            with self._lock:  # not written: try again with the next flush
                self._dirty = True
                self._history_dirty = self._history_dirty or history is not None
            raise
        self.writes += 1
        self._last_progress = self._last_beat = time.monotonic()
        if not owned:
            self._lease_lost()

    def _lease_lost(self) -> None:
        if self.stop_reason != LEASE_LOST:
            log.error("job %s: attempt %d lost its lease (requeued or finished elsewhere); stopping",
                      self.job_id, self.attempt)
        self.stop_reason = LEASE_LOST


def jsonable(value: Any) -> Any:
    """Strict-JSON copy for JSON columns: numpy/torch scalars -> numbers, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | str | None):
        return value
    if isinstance(value, int):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
        return jsonable(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    return str(value)
