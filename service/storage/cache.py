"""A local read-through cache of object-store content, keyed by digest, bounded by HEADWISE_CACHE_BYTES.

An entry is a directory `trees/<key>/` (key = sha256 of the sorted {file name: blob digest} map it holds) with
the files by their names, so callers get ordinary paths (an archive keeps its .zip name, an artifact its file
layout). Entries are immutable; `.complete` (written last) holds the entry's size, and its mtime is the entry's
last use (touched on every hit), which orders LRU eviction.

Several processes on one host share the directory safely through file locks (fcntl):
- `locks/<key>.lock` exclusive while one process downloads an entry (others wait, then find it complete);
- `.evict.lock` exclusive while one process evicts; an entry used within MIN_IDLE_SECONDS is never evicted (a
  reader that just got its path has that long to open its files), so the cache may exceed its bound briefly.
Downloads land in `trees/.<key>.<random>` and are renamed into place, so a killed download leaves no entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MIN_IDLE_SECONDS = 120.0
COMPLETE = ".complete"


def tree_key(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class DigestCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = Path(root), int(max_bytes)
        self.trees = self.root / "trees"
        self.locks = self.root / "locks"

    def entry(self, files: dict[str, str], fetch: Callable[[str, Path], None]) -> Path:
        """The directory holding `files` ({name: digest}); fetch(digest, dest) downloads a missing blob."""
        key = tree_key(files)
        final = self.trees / key
        if self._hit(final):
            return final
        with _locked(self.locks / f"{key}.lock"):
            if not self._hit(final):
                self.trees.mkdir(parents=True, exist_ok=True)
                tmp = self.trees / f".{key}.{uuid.uuid4().hex}"
                try:
                    tmp.mkdir()
                    size = 0
                    for name, digest in sorted(files.items()):
                        dest = tmp / name
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        fetch(digest, dest)
                        size += dest.stat().st_size
                    (tmp / COMPLETE).write_text(json.dumps({"size": size}))
                    if final.exists():  # an incomplete leftover of a killed process
                        shutil.rmtree(final, ignore_errors=True)
                    os.replace(tmp, final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        self.evict(keep=key)
        return final

    def touch(self, path: Path) -> bool:
        """Mark the entry holding path (an entry dir or a file directly in one) used; False if it is gone."""
        entry = path if path.parent == self.trees else path.parent
        return self._hit(entry)

    def _hit(self, final: Path) -> bool:
        marker = final / COMPLETE
        try:
            os.utime(marker)  # last use, for LRU
            return True
        except FileNotFoundError:
            return False

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, size, path) of complete entries, least recently used first."""
        out = []
        for path in self.trees.iterdir() if self.trees.is_dir() else ():
            marker = path / COMPLETE
            try:
                size = int(json.loads(marker.read_text())["size"])
                out.append((marker.stat().st_mtime, size, path))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # in flight or removed concurrently
        return sorted(out)

    def size(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the total is within max_bytes -> the keys removed."""
        removed: list[str] = []
        with _locked(self.root / ".evict.lock", blocking=False) as got:
            if not got:  # another process is evicting right now
                return removed
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            now = time.time()
            for used, size, path in entries:
                if total <= self.max_bytes:
                    break
                if path.name == keep or now - used < MIN_IDLE_SECONDS:
                    continue
                with _locked(self.locks / f"{path.name}.lock", blocking=False) as free:
                    if not free:
                        continue
                    gone = self.trees / f".{path.name}.evicting.{uuid.uuid4().hex}"
                    os.replace(path, gone)  # readers see it vanish at once, never half-deleted
                    shutil.rmtree(gone, ignore_errors=True)
                total -= size
                removed.append(path.name)
        return removed
