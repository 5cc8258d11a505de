"""Files published to object storage and read back through the local cache.

A file or directory under DATA_DIR that must be seen by other hosts (a dataset archive and its table, a model
artifact) is PUBLISHED: each file goes up as a content-addressed blob (`blobs/sha256/<hex>`), then a small ref
object `refs/<path>.json` = {"kind": "file"|"dir", "files": {name: sha256}} names them. Paths are unique (ids are
uuids, version numbers are never reused) and refs are written once, so nothing stored is ever overwritten.
A host missing the local file MATERIALIZES it: ref -> blobs -> a DigestCache entry (verified digests).

Orphans (refs whose database row never committed or was deleted, blobs no ref names) are removed by sweep();
objects younger than a grace period are left alone, because a ref is published before its row commits.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.storage.cache import DigestCache
from service.storage.objects import ObjectMissingError, ObjectStore, digest_of_key

log = logging.getLogger("headwise.storage")

REFS = "refs/"
SWEEP_GRACE_SECONDS = 6 * 3600


def ref_key(rel: str) -> str:
    return f"{REFS}{rel.strip('/')}.json"


class Mirror:
    def __init__(self, store: ObjectStore, cache: DigestCache) -> None:
        self.store, self.cache = store, cache
        self._known: dict[str, Path] = {}  # rel -> cached path (refs never change): no round trip per read

    def publish(self, rel: str, path: Path, digest: str | None = None) -> dict[str, str]:
        """Upload path (a file, or every file of a directory) as blobs, then its ref -> {name: digest}."""
        path = Path(path)
        if path.is_dir():
            kind = "dir"
            files = {p.relative_to(path).as_posix(): self.store.put_blob(p)
                     for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")}
        else:
            kind, files = "file", {path.name: self.store.put_blob(path, digest)}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({"kind": kind, "files": files}, fh, sort_keys=True)
        try:
            self.store.put_file(ref_key(rel), Path(fh.name))
        finally:
            Path(fh.name).unlink(missing_ok=True)
        # a concurrent unpublish may have dropped a shared blob between our exists-check and the ref: put it back
        sources = {d: (path / n if kind == "dir" else path) for n, d in files.items()}
        for digest, source in sources.items():
            self.store.put_blob(source, digest)
        return files

    def read_ref(self, rel: str) -> dict | None:
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "ref.json"
            try:
                self.store.get_file(ref_key(rel), dest)
            except ObjectMissingError:
                return None
            return json.loads(dest.read_text())

    def materialize(self, rel: str) -> Path | None:
        """A local path with the published content of rel (None when nothing is published there)."""
        known = self._known.get(rel)
        if known is not None and self.cache.touch(known):
            return known
        ref = self.read_ref(rel)
        if ref is None:
            return None
        entry = self.cache.entry(ref["files"], self.store.get_blob)
        path = entry / next(iter(ref["files"])) if ref["kind"] == "file" else entry
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[rel] = path
        return path

    def unpublish(self, prefix: str) -> int:
        """Remove the refs at or under prefix, then the blobs no remaining ref names -> objects removed."""
        keys = [o.key for o in self.store.list(ref_key(prefix)[: -len(".json")])]
        dropped: set[str] = set()
        for key in keys:
            ref = self.read_ref(key[len(REFS):].removesuffix(".json"))
            dropped.update((ref or {}).get("files", {}).values())
            self.store.delete(key)
        named = self._named()
        gone = sorted(dropped - named)
        for digest in gone:
            self.store.delete(f"blobs/sha256/{digest}")
        return len(keys) + len(gone)

    def sweep(self, live: set[str], grace_seconds: float = SWEEP_GRACE_SECONDS,
              keep_prefixes: set[str] = frozenset()) -> dict[str, int]:
        """Remove refs whose path is not in `live` (the paths the database knows) nor under keep_prefixes (an
        active job's checkpoints), and blobs that no ref names, both only when older than grace_seconds."""
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
        refs = 0
        for obj in list(self.store.list(REFS)):
            rel = obj.key[len(REFS):].removesuffix(".json")
            kept = rel in live or any(rel.startswith(p) for p in keep_prefixes)
            if not kept and obj.modified < cutoff:
                self.store.delete(obj.key)
                refs += 1
        blobs = self._drop_unreferenced(grace_seconds)
        if refs or blobs:
            log.warning("storage sweep removed %d orphan ref(s) and %d unreferenced blob(s)", refs, blobs)
        return {"refs": refs, "blobs": blobs}

    def _named(self) -> set[str]:
        named: set[str] = set()
        for obj in list(self.store.list(REFS)):
            ref = self.read_ref(obj.key[len(REFS):].removesuffix(".json"))
            named.update((ref or {}).get("files", {}).values())
        return named

    def _drop_unreferenced(self, grace_seconds: float) -> int:
        named = self._named()
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
        removed = 0
        for obj in list(self.store.list("blobs/")):
            digest = digest_of_key(obj.key)
            if digest and digest not in named and obj.modified < cutoff:
                self.store.delete(obj.key)
                removed += 1
        return removed
