"""Dynamic micro-batching for /predict: one MicroBatcher per loaded model version, one inference thread per process.

Requests (`await submit(arrays)`, arrays (n, H, W, C) uint8) wait in a per-batcher FIFO queue. The process's
inference thread (InferenceWorker) concatenates queued requests into one batch, runs the batcher's `run_batch`
on it and hands each request back its own slice of the results, in input order. The thread takes the next batch
itself the moment a run ends: the network never waits for a busy event loop to hand it work.

Batching policy (exact):
  * One batch in flight per process (the network never runs concurrently), so at most one per batcher. While it
    runs, new requests queue: under load, batches form by themselves out of what arrived during the run.
  * When the inference thread is free it dispatches a batcher's queue as soon as one of these holds:
      1. the queue holds >= max_batch images;
      2. the oldest queued request arrived while its batcher was idle and its queue empty -- a lone request is
         never delayed (it goes at once, with whatever else is already queued);
      3. the oldest queued request has waited max_wait_ms. A request that arrived while a batch was running (or
         behind others) therefore waits for more only while the batch is still filling, and at most max_wait_ms
         from its arrival; that wait overlaps the busy time, so after a run longer than max_wait_ms the next
         batch goes at once.
    Several batchers (model versions) with work are served round-robin.
  * A batch takes whole requests, FIFO, while the total stays <= max_batch images (a single request larger
    than max_batch forms a batch of its own). Requests whose caller has gone (cancelled) are skipped.
  * Bounded queue: when more than max_queue images would wait, submit raises Overloaded (-> 503 + Retry-After).
  * Failure isolation: when run_batch raises on a batch of several requests, each request is re-run alone, so
    the exception reaches only the request(s) that cause it.

Torch threads are set in the inference thread before its first run: HEADWISE_TORCH_THREADS = N, or "auto" (the
default): usable CPUs - 1, at least 1 -- one core is left to the event loop, HTTP parsing and image decoding,
which otherwise fight torch's threads for the CPU (on 2 cores: 1 thread; measured in bench/predict.py);
0 = torch's own default (all cores). This module imports torch only to apply that setting.

Settings (fields of service.config.Settings, env HEADWISE_*): PREDICT_MAX_BATCH (64), PREDICT_MAX_WAIT_MS (2),
PREDICT_MAX_QUEUE (1024), TORCH_THREADS (auto), PREDICT_TRACE (true: the predictor cache serves a TorchScript
trace of the network on CPU; see service/serving/predictor_cache.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.serving.inference_thread import InferenceWorker, inference_worker, resolve_threads

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger("headwise.batcher")

RunBatch = Callable[[np.ndarray], list[dict]]
# on_batch(images, requests, queue_waits_seconds, run_seconds): metrics hook, called in the inference thread
OnBatch = Callable[[int, int, list[float], float], None]


class Overloaded(Exception):
    """Too many images are waiting: the caller should retry after `retry_after` seconds (HTTP 503)."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message, retry_after)
        self.message, self.retry_after = message, retry_after

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class BatcherConfig:
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    torch_threads: int = 0  # resolved: 0 = torch's default
    trace: bool = True  # PREDICT_TRACE: serve a TorchScript trace on CPU (Predictor.optimize_for_serving)

    @classmethod
    def from_settings(cls, settings: Settings) -> BatcherConfig:
        return cls(max_batch=settings.PREDICT_MAX_BATCH, max_wait_ms=settings.PREDICT_MAX_WAIT_MS,
                   max_queue=settings.PREDICT_MAX_QUEUE, trace=settings.PREDICT_TRACE,
                   torch_threads=resolve_threads(settings.TORCH_THREADS))


# ---- requests and batchers (state guarded by the inference worker's lock) ------------------------------------------

@dataclass(eq=False)  # identity: requests hold arrays
class _Request:
    arrays: np.ndarray | None  # None until `prepare` ran (lazy requests)
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float
    lone: bool  # arrived to an idle batcher and an empty queue
    count: int  # images
    prepare: Callable[[], np.ndarray] | None = None


class MicroBatcher:
    def __init__(self, run_batch: RunBatch, max_batch: int = 64, max_wait_ms: float = 2.0, max_queue: int = 1024,
                 *, worker: InferenceWorker | None = None, on_batch: OnBatch | None = None, name: str = ""):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.run_batch, self.name, self.on_batch = run_batch, name, on_batch
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.worker = worker
        self._queue: deque[_Request] = deque()
        self._queued = 0  # images waiting
        self._busy = False  # a batch of this batcher is running
        self._retired = False
        self.batches = 0  # runs of run_batch (stats, tests)

    @classmethod
    def from_config(cls, run_batch: RunBatch, config: BatcherConfig, **kwargs) -> MicroBatcher:
        return cls(run_batch, config.max_batch, config.max_wait_ms, config.max_queue, **kwargs)

    @property
    def queued_images(self) -> int:
        return self._queued

    @property
    def idle(self) -> bool:
        """No batch running and nothing queued (a lock-free hint: a request sent now is almost surely lone)."""
        return not self._busy and not self._queue

    async def submit(self, arrays: np.ndarray) -> list[dict]:
        """Queue one request's images; -> their results in order. Raises Overloaded when the queue is full."""
        return await self._submit(arrays, len(arrays), None)

    async def submit_lazy(self, prepare: Callable[[], np.ndarray], count: int) -> list[dict]:
        """Like submit, but the images are produced by prepare() (decode + preprocess), called in the inference
        thread right before the batch runs; an exception from it reaches only this request. Meant for an idle
        batcher: a lone request then costs one thread hop instead of two (a preprocessing hop, then the
        network's); under load, preprocess in a threadpool and submit() instead (the network thread stays busy
        with the network)."""
        return await self._submit(None, count, prepare)

    async def _submit(self, arrays: np.ndarray | None, n: int, prepare) -> list[dict]:
        if n == 0:
            return []
        worker = self.worker or inference_worker()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with worker.cond:
            if self._queued + n > self.max_queue:
                raise Overloaded(f"prediction queue is full ({self._queued} images waiting, limit "
                                 f"{self.max_queue}); retry shortly", retry_after=1.0)
            lone = not self._busy and not self._queue
            self._queue.append(_Request(arrays, future, loop, time.perf_counter(), lone, n, prepare))
            self._queued += n
            worker.ready(self)
        return await future

    def retire(self) -> None:
        """The model version was evicted: nothing to stop (the worker holds no per-batcher state once the queue
        is empty); requests already queued still run."""
        self._retired = True

    # -- the InferenceWorker's side: called with its lock held --
    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    def dispatch_at(self) -> float:
        """When the (non-empty) queue may be dispatched (perf_counter time; <= now means at once)."""
        head = self._queue[0]
        if head.lone or self._queued >= self.max_batch:
            return 0.0
        return head.arrived + self.max_wait

    def take_batch(self) -> list[_Request]:
        """The next batch (whole requests, FIFO, <= max_batch images); marks this batcher busy when non-empty."""
        batch: list[_Request] = []
        images = 0
        while self._queue:
            req = self._queue[0]
            if req.future.done():  # the caller went away (cancelled)
                self._queue.popleft()
                self._queued -= req.count
                continue
            if batch and images + req.count > self.max_batch:
                break
            self._queue.popleft()
            self._queued -= req.count
            batch.append(req)
            images += req.count
        self._busy = bool(batch)
        return batch

    def batch_done(self) -> None:
        """The batch taken last has run: idle again (before its callers hear back: their next request is lone)."""
        self._busy = False

    # -- called by the worker without its lock --
    def execute(self, batch: list[_Request]) -> list[tuple[_Request, list | None, BaseException | None]]:
        """Run the batch -> (request, its results, or its exception) for each; delivered by the caller."""
        started = time.perf_counter()
        failed = []
        for req in [r for r in batch if r.prepare is not None]:
            try:
                req.arrays, req.prepare = req.prepare(), None
                req.count = len(req.arrays)
            except Exception as exc:  # e.g. an undecodable image: this request's own error
                failed.append((req, None, exc))
                batch.remove(req)
        if not batch:
            return failed
        try:
            arrays = batch[0].arrays if len(batch) == 1 else np.concatenate([r.arrays for r in batch])
            results = self._call(arrays)
        except Exception as exc:
            if len(batch) == 1:
                return [*failed, (batch[0], None, exc)]
            # isolate: each request alone, so only the failing ones see an exception
            log.warning("batch of %d requests failed (%s); re-running them one by one", len(batch), exc)
            return [*failed, *(item for req in batch for item in self.execute([req]))]
        seconds = time.perf_counter() - started
        out, offset = failed, 0
        for req in batch:
            n = len(req.arrays)
            out.append((req, results[offset:offset + n], None))
            offset += n
        if self.on_batch is not None:
            try:
                self.on_batch(offset, len(batch), [started - r.arrived for r in batch], seconds)
            except Exception:  # metrics never break predictions
                log.warning("on_batch hook failed", exc_info=True)
        return out

    def _call(self, arrays: np.ndarray) -> list[dict]:
        self.batches += 1
        results = self.run_batch(arrays)
        if len(results) != len(arrays):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(arrays)} images")
        return results
