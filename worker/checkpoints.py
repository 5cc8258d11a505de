"""Training checkpoints in object storage, so a job requeued onto ANOTHER host resumes where it stopped.

The engine writes `jobs/<id>/checkpoints/checkpoint.pt` after every epoch, then calls on_epoch. With object
storage configured (no-op otherwise), after_epoch() snapshots that file (a hard link: the engine replaces the
file atomically, so the snapshot keeps its bytes) and a background thread publishes it as the write-once ref
`jobs/<id>/checkpoints/epoch-<NNNNNN>` and then drops the previous epoch's ref and blob. Training never waits on
the store: while one upload runs, newer epochs replace the pending snapshot (only the latest matters).
restore() runs before training on a host without the local file: newest published epoch -> checkpoint.pt.
When the job ends, everything under `jobs/<id>` is unpublished (the sweeper covers a crash in between).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from pathlib import Path

from service.storage import Storage

log = logging.getLogger("headwise.worker")

CHECKPOINT = "checkpoint.pt"
EPOCH_REF = re.compile(r"epoch-(\d{6})$")


class CheckpointSync:
    def __init__(self, storage: Storage, job_id: str) -> None:
        self.storage, self.job_id = storage, job_id
        self.dir = storage.checkpoint_dir(job_id)
        self.enabled = storage.mirror is not None
        self._pending: tuple[int, Path] | None = None
        self._published: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.uploaded: list[int] = []

    def _rel(self, epoch: int) -> str:
        return f"jobs/{self.job_id}/checkpoints/epoch-{epoch:06d}"

    def published_epochs(self) -> list[int]:
        prefix = f"refs/jobs/{self.job_id}/checkpoints/"
        found = [EPOCH_REF.search(o.key.removesuffix(".json")) for o in self.storage.mirror.store.list(prefix)]
        return sorted(int(m.group(1)) for m in found if m)

    def restore(self) -> int | None:
        """Fetch the newest published checkpoint when there is none here -> its epoch (None: nothing done)."""
        if not self.enabled or (self.dir / CHECKPOINT).exists():
            return None
        try:
            epochs = self.published_epochs()
            cached = self.storage.mirror.materialize(self._rel(epochs[-1])) if epochs else None
        except Exception as exc:  # noqa: BLE001 - the store is down: train from the start rather than not at all
            log.warning("job %s: could not read its checkpoints from object storage: %s", self.job_id, exc)
            return None
        if cached is None:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{CHECKPOINT}.restore"
        shutil.copyfile(cached, tmp)
        os.replace(tmp, self.dir / CHECKPOINT)
        self._published = epochs[-1]
        log.info("job %s: restored the epoch %d checkpoint from object storage", self.job_id, epochs[-1])
        return epochs[-1]

    def after_epoch(self, epoch: int) -> None:
        if not self.enabled or not (self.dir / CHECKPOINT).exists():
            return
        snapshot = self.dir / f".snapshot-{epoch:06d}"
        try:
            os.link(self.dir / CHECKPOINT, snapshot)
        except OSError:
            shutil.copyfile(self.dir / CHECKPOINT, snapshot)
        with self._lock:
            old, self._pending = self._pending, (epoch, snapshot)
        if old is not None:
            old[1].unlink(missing_ok=True)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"headwise-ckpt-{self.job_id[:8]}", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                item, self._pending = self._pending, None
            if item is None:
                if self._closed:
                    return
                continue
            epoch, snapshot = item
            try:
                self.storage.mirror.publish(self._rel(epoch), snapshot)
                if self._published is not None and self._published != epoch:
                    self.storage.mirror.unpublish(self._rel(self._published))
                self._published = epoch
                self.uploaded.append(epoch)
            except Exception as exc:  # noqa: BLE001 - the store is down: the next epoch tries again
                log.warning("job %s: checkpoint of epoch %d not stored: %s", self.job_id, epoch, exc)
            finally:
                snapshot.unlink(missing_ok=True)
            if self._closed and self._pending is None:
                return

    def close(self) -> None:
        """Let the pending upload finish (bounded wait)."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=120)


def forget(storage: Storage, job_id: str) -> None:
    """The job ended: its published checkpoints are no longer needed."""
    storage.unpublish(f"jobs/{job_id}")
