"""An in-process LRU of loaded model versions, keyed by model version id: a Predictor plus its MicroBatcher.

Thread-safe; each key loads once (concurrent callers wait for the one load). The loader picks the runtime
(service/serving/runtimes.py: ONNX Runtime where the artifact has model.onnx). When torch serves on CPU its
network is replaced by a TorchScript trace (HEADWISE_PREDICT_TRACE=1, the default: Predictor.optimize_for_serving -- a forward no
longer takes the GIL per op, so the event loop and the network stop stalling each other). A new entry is warmed up in the
inference thread with dummy batches (1 and max_batch images, fewer for large images) before it is served, so the first real request
does not pay for allocator / kernel set-up. Evicted entries retire their batcher (queued requests still finish).

Loading is blocking (artifact checksums, torch): `entry()` is called from a threadpool; `peek()` is the
non-blocking fast path for the event loop. Inference goes through `entry.batcher.submit(arrays)` (async).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.serving.batcher import BatcherConfig, MicroBatcher, OnBatch
from service.serving.inference_thread import run_in_inference_thread
from service.serving.runtimes import uses_torch

RESOLVE_TTL = 1.0
RESOLVE_MAX = 10_000


@dataclass
class Entry:
    predictor: Any
    batcher: MicroBatcher


class PredictorCache:
    def __init__(self, capacity: int, loader: Callable[[str], Any], *, batching: BatcherConfig | None = None,
                 on_batch: OnBatch | None = None, warmup: bool = True):
        self.capacity = max(1, capacity)
        self.loader = loader  # artifact path -> Predictor
        self.batching = batching or BatcherConfig()
        self.on_batch, self.warmup = on_batch, warmup
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._resolved: dict[tuple, tuple[float, Any]] = {}
        self.loads = 0

    # Name -> version resolution (a database read per request otherwise), cached RESOLVE_TTL seconds: a newly
    # registered "latest" version is served within that time. Only successful lookups are cached.
    def resolved(self, key: tuple) -> Any | None:
        hit = self._resolved.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1]

    def remember(self, key: tuple, value: Any) -> None:
        if len(self._resolved) >= RESOLVE_MAX:
            self._resolved.clear()
        self._resolved[key] = (time.monotonic() + RESOLVE_TTL, value)

    def peek(self, key: str) -> Entry | None:
        """The loaded entry (marked recently used), or None. Never blocks on a load."""
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
            return entry

    def entry(self, key: str, artifact_path: str) -> Entry:
        """Load (once per key), warm up and cache; blocking."""
        found = self.peek(key)
        if found is not None:
            return found
        with self._lock:
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one loader per key; others wait for its result
            found = self.peek(key)
            if found is not None:
                return found
            predictor = self.loader(artifact_path)
            if self.batching.trace and hasattr(predictor, "optimize_for_serving") and uses_torch(predictor):
                predictor = run_in_inference_thread(predictor.optimize_for_serving)
            if self.warmup:
                run_in_inference_thread(self._warm_up, predictor)
            batcher = MicroBatcher.from_config(predictor.predict_arrays, self.batching, on_batch=self._on_batch,
                                               name=key)
            entry = Entry(predictor, batcher)
            evicted = []
            with self._lock:
                self.loads += 1
                self._items[key] = entry
                while len(self._items) > self.capacity:
                    evicted.append(self._items.popitem(last=False)[1])
                self._loading.pop(key, None)
            for old in evicted:
                old.batcher.retire()
            return entry

    def get(self, key: str, artifact_path: str) -> Any:
        """The loaded Predictor (blocking load on a miss)."""
        return self.entry(key, artifact_path).predictor

    def predict(self, key: str, artifact_path: str, images: Sequence[Any]) -> list[dict]:
        """Blocking, unbatched: decode-free helper for non-async callers; runs in the inference thread."""
        predictor = self.get(key, artifact_path)
        return run_in_inference_thread(predictor.predict, images)

    def _warm_up(self, predictor: Any) -> None:
        import numpy as np

        size, channels = getattr(predictor, "size", None), getattr(predictor, "channels", None)
        if size is None or channels is None:
            return
        largest = min(self.batching.max_batch, max(1, 2**18 // (size * size)))  # 64 at 64x64, fewer when larger
        for n in sorted({1, largest}):
            predictor.predict_arrays(np.zeros((n, size, size, channels), np.uint8))

    def _on_batch(self, images: int, requests: int, waits: list[float], seconds: float) -> None:
        if self.on_batch is not None:
            self.on_batch(images, requests, waits, seconds)

    def forget_resolved(self) -> None:
        """Drop every cached name -> version resolution (an alias moved, a version was deleted)."""
        self._resolved.clear()

    def discard(self, key: str) -> None:
        """Unload one model version (deleted); its queued requests still finish."""
        with self._lock:
            entry = self._items.pop(key, None)
        if entry is not None:
            entry.batcher.retire()

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            entries = list(self._items.values())
            self._items.clear()
            self._resolved.clear()
        for entry in entries:
            entry.batcher.retire()
