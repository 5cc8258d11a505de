"""Bytes: datasets, artifacts, reports. One interface (Storage) over this host's directory, optionally mirrored
to object storage (HEADWISE_STORAGE_URL) with a bounded local read-through cache (HEADWISE_CACHE_BYTES)."""

from __future__ import annotations

from typing import Any

from service.storage.local import Storage

__all__ = ["Storage", "storage_for"]


def storage_for(settings: Any) -> Storage:
    """The Storage of a process: DATA_DIR, plus the object store when HEADWISE_STORAGE_URL is set."""
    if not getattr(settings, "STORAGE_URL", ""):
        return Storage(settings.DATA_DIR)
    from service.storage.cache import DigestCache
    from service.storage.objects import open_store
    from service.storage.remote import Mirror

    storage = Storage(settings.DATA_DIR)
    storage.mirror = Mirror(open_store(settings.STORAGE_URL), DigestCache(storage.cache_dir, settings.CACHE_BYTES))
    return storage
