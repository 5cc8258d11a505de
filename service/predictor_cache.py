"""An in-process LRU of loaded Predictors, keyed by model version id. Thread-safe; each key loads once.

Loading and inference are blocking (artifact checksums, torch): callers run them in a threadpool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any


class PredictorCache:
    def __init__(self, capacity: int, loader: Callable[[str], Any]):
        self.capacity = max(1, capacity)
        self.loader = loader  # artifact path -> Predictor
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._run_locks: dict[str, threading.Lock] = {}
        self.loads = 0

    def get(self, key: str, artifact_path: str) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one loader per key; others wait for its result
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            predictor = self.loader(artifact_path)
            with self._lock:
                self.loads += 1
                self._items[key] = predictor
                self._run_locks.setdefault(key, threading.Lock())
                while len(self._items) > self.capacity:
                    old, _ = self._items.popitem(last=False)
                    self._run_locks.pop(old, None)
                self._loading.pop(key, None)
            return predictor

    def predict(self, key: str, artifact_path: str, images: Sequence[Any]) -> list[dict]:
        """Load (or reuse) and run one batch. One batch per model at a time: no thread oversubscription."""
        predictor = self.get(key, artifact_path)
        with self._lock:
            run_lock = self._run_locks.setdefault(key, threading.Lock())
        with run_lock:
            return predictor.predict(images)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._run_locks.clear()
