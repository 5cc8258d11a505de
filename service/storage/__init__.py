"""Bytes on disk: datasets, artifacts, reports. One interface (Storage); the local directory is its backend."""

from service.storage.local import Storage

__all__ = ["Storage"]
