"""Bytes on disk under DATA_DIR.

Layout (paths stored in the database are relative to DATA_DIR):
    datasets/<id>/<file>          the uploaded archive (dataset.zip | dataset.npz)
    datasets/<id>/table.json      labels table extracted at upload (keys + columns), re-read by jobs/audit
    datasets/<id>/cache/          decoded image caches (worker)
    artifacts/<model>/<version>/  model artifacts (<model> is the registered model id: unique across teams)
    jobs/<id>/checkpoints/        resumable training checkpoints
    tmp/                          in-flight uploads and atomic-write staging
    cache/                        read-through cache of object storage (service/storage/cache.py)

With object storage configured (HEADWISE_STORAGE_URL, see service/storage/remote.py) DATA_DIR is this host's own
working directory: datasets and artifacts are PUBLISHED to the store once final (publish()), and a path that is
missing here is read through the cache (abs() returns the cached copy), so hosts share nothing but the store.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MAX_AGE_SECONDS = 24 * 3600  # tmp/ entries older than this are leftovers of a crash
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError saying the disk (or the filesystem quota) is full; also when one is its cause."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class Storage:
    def __init__(self, data_dir: Path | str, mirror: Any = None):
        self.root = Path(data_dir).expanduser().resolve()
        self.mirror = mirror  # service.storage.remote.Mirror, or None: the local directory is the only copy

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    # ---- layout --------------------------------------------------------------------------------------
    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.root / "datasets" / _safe(dataset_id)

    def dataset_cache_dir(self, dataset_id: str) -> Path:
        return self.dataset_dir(dataset_id) / "cache"

    def dataset_table_path(self, dataset_id: str) -> Path:
        return self.dataset_dir(dataset_id) / "table.json"

    def artifact_dir(self, model: str, version: int) -> Path:
        return self.root / "artifacts" / _safe(model) / str(int(version))

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / _safe(job_id)

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoints"

    def results_dir(self, job_id: str) -> Path:
        """Result files of a finished non-training job (batch prediction: results.jsonl, results.csv)."""
        return self.root / "results" / _safe(job_id)

    def ensure(self) -> None:
        for sub in ("datasets", "artifacts", "jobs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- relative <-> absolute -----------------------------------------------------------------------
    def rel(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    def abs(self, rel: str) -> Path:
        """The local path of rel; with object storage, a published path missing here is read through the cache
        (raises ObjectStoreUnavailableError when the store cannot be reached)."""
        path = self.local(rel)
        if self.mirror is not None and not path.exists():
            cached = self.mirror.materialize(Path(rel).as_posix())
            if cached is not None:
                return cached
        return path

    def local(self, rel: str) -> Path:
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"path {rel!r} escapes the data directory")
        return path

    # ---- object storage --------------------------------------------------------------------------------
    def publish(self, path: Path, digest: str | None = None) -> None:
        """Make a final file or directory visible to every host (no-op without object storage). Raises
        ObjectStoreUnavailableError; call it BEFORE the database row that names the path commits."""
        if self.mirror is not None:
            self.mirror.publish(self.rel(path), Path(path), digest)

    def unpublish(self, rel_prefix: str) -> None:
        """Remove what was published at or under rel_prefix (refs, then blobs nothing else names). Best effort:
        called after the row is gone, so a store that is down leaves the objects to the sweeper."""
        if self.mirror is None:
            return
        try:
            self.mirror.unpublish(rel_prefix)
        except Exception as exc:  # noqa: BLE001
            import logging

            logging.getLogger("headwise.storage").warning("%s: objects left for the sweeper: %s", rel_prefix, exc)

    # ---- writes --------------------------------------------------------------------------------------
    def new_tmp_path(self, suffix: str = "") -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}"

    def atomic_write_bytes(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def atomic_write_json(self, path: Path, obj: Any) -> None:
        self.atomic_write_bytes(path, json.dumps(obj, separators=(",", ":")).encode())

    def move_into(self, src: Path, dst: Path) -> Path:
        """Move a finished file (e.g. a validated upload in tmp/) to its final place, atomically."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        return dst

    # ---- the labels table extracted at upload ----------------------------------------------------------
    def save_table(self, dataset_id: str, table: Any) -> None:
        """Keep the validated labels table (a service.ml.data.Table) next to the archive: jobs and audits then
        skip re-reading the archive."""
        self.atomic_write_json(self.dataset_table_path(dataset_id), dataclasses.asdict(table))

    def load_table(self, dataset_id: str, archive_rel: str) -> Any:
        """The dataset's Table (from table.json; re-read from the archive when that is missing or stale)."""
        from service.ml.data import Table, read_table

        path = self.dataset_table_path(dataset_id)
        if path.is_file():
            try:
                obj = json.loads(path.read_text())
                known = {f.name for f in dataclasses.fields(Table)}
                if isinstance(obj.get("image_shape"), list):
                    obj["image_shape"] = tuple(obj["image_shape"])
                return Table(**{k: v for k, v in obj.items() if k in known})
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # fall back to the archive
        return read_table(self.abs(archive_rel))

    # ---- removal -------------------------------------------------------------------------------------
    def remove(self, path: Path | None) -> None:
        if path is None:
            return
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def sweep_tmp(self, max_age_seconds: float = TMP_MAX_AGE_SECONDS) -> int:
        """Remove entries of tmp/ untouched for max_age_seconds: partial uploads and artifact staging left by a
        process killed mid-write (a live write keeps its mtime fresh). Returns the number removed."""
        cutoff, removed = time.time() - max_age_seconds, 0
        for entry in self.tmp_dir.iterdir() if self.tmp_dir.is_dir() else ():
            try:
                if entry.lstat().st_mtime < cutoff:
                    self.remove(entry)
                    removed += 1
            except OSError:  # removed concurrently
                continue
        return removed

    def tree_bytes(self, rel: str) -> int:
        """Bytes of the regular files under DATA_DIR/rel (0 when it is gone)."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.abs(rel)):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:  # removed concurrently
                    continue
        return total

    def remove_dataset(self, dataset_id: str) -> None:
        self.remove(self.dataset_dir(dataset_id))
        if self.mirror is not None:
            self.unpublish(f"datasets/{_safe(dataset_id)}")

    def iter_files(self, directory: Path) -> Iterator[Path]:
        """Regular files under directory (sorted, no symlinks, no hidden staging files)."""
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                yield path


def _safe(part: str) -> str:
    part = str(part)
    if not part or part in {".", ".."} or "/" in part or "\\" in part or "\x00" in part:
        raise ValueError(f"unsafe path component {part!r}")
    return part
