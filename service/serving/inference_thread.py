"""The process's one inference thread: it runs every network call (batches of every MicroBatcher, round-robin,
and plain calls such as load-time tracing and warm-up) and hands results back to the callers' event loops.

It talks to a batcher only through its public worker-side methods (has_queued, dispatch_at, take_batch,
execute, batch_done; see service/serving/batcher.py), always holding `cond` except around execute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.serving.batcher import MicroBatcher

log = logging.getLogger("headwise.batcher")


def auto_threads() -> int:
    """Usable CPUs minus one (for the HTTP side), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def resolve_threads(setting: int | str) -> int:
    """Settings.TORCH_THREADS -> a thread count: "auto" = auto_threads(), N as given (0 = torch's default)."""
    return auto_threads() if setting == "auto" else int(setting)


def set_torch_threads(threads: int) -> None:
    """Fix torch's intra-op threads for the calling thread and the process (0 = leave torch's default)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _deliver(items: list[tuple[Any, list | None, BaseException | None]]) -> None:
    """From the inference thread: resolve futures on their event loops (one callback per loop). items:
    (request, its results or None, its exception or None)."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for item in items:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, group)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _resolve(group: list) -> None:
    for req, result, exc in group:
        if req.future.done():
            continue
        if exc is not None:
            req.future.set_exception(exc)
        else:
            req.future.set_result(result)


class InferenceWorker:
    """One thread that runs every network call of the process: batches of all batchers, round-robin, and
    plain calls (`call(fn)`: load-time tracing and warm-up). Started on first use; daemon."""

    def __init__(self, torch_threads: int = 0, name: str = "headwise-infer"):
        self.torch_threads, self.name = torch_threads, name
        self.cond = threading.Condition()
        self._ready: deque[MicroBatcher] = deque()  # batchers with queued requests, round-robin order
        self._calls: deque[tuple[Future, Callable, tuple]] = deque()
        self._thread: threading.Thread | None = None

    def ready(self, batcher: MicroBatcher) -> None:
        """With cond held: `batcher` has queued work."""
        if batcher not in self._ready:
            self._ready.append(batcher)
        self._start()
        self.cond.notify()

    def call(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        with self.cond:
            self._calls.append((future, fn, args))
            self._start()
            self.cond.notify()
        return future

    def run(self, fn: Callable, *args):
        """Blocking: fn(*args) in the inference thread (directly when already in it)."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        return self.call(fn, *args).result()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _next(self) -> tuple[str, object]:
        """Block until there is a call to make or a batch to run; -> ("call", item) | ("batch", batcher)."""
        with self.cond:
            while True:
                if self._calls:
                    return "call", self._calls.popleft()
                now, wake = time.perf_counter(), None
                for batcher in list(self._ready):
                    if not batcher.has_queued:
                        self._ready.remove(batcher)
                        continue
                    at = batcher.dispatch_at()
                    if at <= now:
                        batch = batcher.take_batch()
                        self._ready.remove(batcher)
                        if batcher.has_queued:
                            self._ready.append(batcher)  # round-robin: to the back
                        if batch:
                            return "batch", (batcher, batch)
                        continue
                    wake = at if wake is None else min(wake, at)
                self.cond.wait(None if wake is None else max(0.0, wake - now))

    def _loop(self) -> None:
        set_torch_threads(self.torch_threads)
        while True:
            kind, item = self._next()
            if kind == "call":
                future, fn, args = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # handed to the caller
                        future.set_exception(exc)
                continue
            batcher, batch = item
            try:
                items = batcher.execute(batch)
            except Exception:  # never let the thread die: every later request would hang
                log.exception("inference worker: unexpected error running a batch")
                items = [(r, None, RuntimeError("internal error in the inference thread")) for r in batch]
            with self.cond:  # idle again BEFORE the callers hear back: their next request is a lone one
                batcher.batch_done()
            _deliver(items)


_worker: InferenceWorker | None = None
_worker_lock = threading.Lock()


def inference_worker() -> InferenceWorker:
    """The process's inference thread (torch threads from Settings.TORCH_THREADS), created on first use."""
    global _worker
    with _worker_lock:
        if _worker is None:
            from service.config import get_settings

            _worker = InferenceWorker(resolve_threads(get_settings().TORCH_THREADS))
        return _worker


def run_in_inference_thread(fn: Callable, *args):
    """Blocking helper for non-async callers (tracing and warm-up on load, benchmarks)."""
    return inference_worker().run(fn, *args)
