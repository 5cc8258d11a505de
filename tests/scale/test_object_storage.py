"""Object storage against a REAL S3-protocol server process (moto's server mode, tests/scale/s3server.py):
multipart uploads, content-addressed blobs with verified downloads, publish/materialize through the local
cache, LRU eviction, several processes sharing one cache, the orphan sweeper, and 503 + Retry-After when the
store is unreachable."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest

from service.config import Settings
from service.storage import Storage, storage_for
from service.storage import cache as cache_mod
from service.storage.cache import DigestCache
from service.storage.objects import (
    ObjectStoreUnavailableError,
    S3ObjectStore,
    blob_key,
    open_store,
)
from service.storage.remote import Mirror
from tests.e2e.harness import free_port

pytestmark = pytest.mark.slow


def _file(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32))
    return path


def test_multipart_upload_and_verified_download(s3, tmp_path: Path) -> None:
    store = open_store(f"s3://{s3.bucket}/team-a/headwise")
    assert isinstance(store, S3ObjectStore)
    big = _file(tmp_path / "big.bin", 20 * 1024**2 + 123)
    digest = store.put_blob(big)
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()
    key = f"team-a/headwise/{blob_key(digest)}"
    assert s3.keys() == [key]
    etag = s3.client().head_object(Bucket=s3.bucket, Key=key)["ETag"].strip('"')
    assert etag.endswith("-3"), f"expected a 3-part multipart upload (8 MiB parts), ETag {etag}"
    store.put_blob(big)  # same content, same key: nothing new
    assert s3.keys() == [key]
    out = tmp_path / "out" / "big.bin"
    out.parent.mkdir()
    store.get_blob(digest, out)
    assert out.read_bytes() == big.read_bytes()
    assert [o.key for o in store.list("blobs/")] == [blob_key(digest)]

    # a corrupted object never lands at the destination
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"tampered")
    with pytest.raises(ObjectStoreUnavailableError, match="corrupt"):
        store.get_blob(digest, tmp_path / "out" / "again.bin")
    assert not (tmp_path / "out" / "again.bin").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["big.bin"]


def test_publish_materialize_and_unpublish(s3, tmp_path: Path) -> None:
    settings = Settings(DATA_DIR=tmp_path / "host1", STORAGE_URL=f"s3://{s3.bucket}/p", SECRET="x")
    host1 = storage_for(settings)
    archive = _file(host1.dataset_dir("d1") / "dataset.zip", 5000, seed=1)
    artifact = host1.artifact_dir("m1", 1)
    _file(artifact / "weights.safetensors", 3000, seed=2)
    _file(artifact / "spec.json", 100, seed=3)
    _file(host1.dataset_dir("d2") / "dataset.zip", 5000, seed=1)  # same bytes as d1: one blob
    host1.publish(archive)
    host1.publish(artifact)
    host1.publish(host1.dataset_dir("d2") / "dataset.zip")
    assert len([k for k in s3.keys() if "/blobs/" in k]) == 3

    host2 = storage_for(settings.model_copy(update={"DATA_DIR": tmp_path / "host2"}))  # an empty directory
    got = host2.abs("datasets/d1/dataset.zip")
    assert got.name == "dataset.zip" and got.read_bytes() == archive.read_bytes()
    assert got.is_relative_to(host2.cache_dir)
    tree = host2.abs("artifacts/m1/1")
    assert sorted(p.name for p in tree.iterdir() if not p.name.startswith(".")) == ["spec.json", "weights.safetensors"]
    assert (tree / "weights.safetensors").read_bytes() == (artifact / "weights.safetensors").read_bytes()
    assert host2.abs("datasets/nope/dataset.zip") == host2.local("datasets/nope/dataset.zip")  # not published

    host1.remove_dataset("d1")  # d2 still names the shared blob: it stays
    assert not any("refs/datasets/d1/" in k for k in s3.keys())
    assert len([k for k in s3.keys() if "/blobs/" in k]) == 3
    host1.remove_dataset("d2")
    host1.unpublish("artifacts/m1/1")
    assert s3.keys() == [], s3.keys()


def _materialize(args: tuple[str, str, str]) -> str:
    store_dir, cache_dir, log = args
    from service.storage.objects import LocalObjectStore

    store = LocalObjectStore(store_dir)

    def fetch(digest: str, dest: Path) -> None:
        with open(log, "a") as fh:
            fh.write(digest + "\n")
        store.get_blob(digest, dest)

    digest = hashlib.sha256(b"shared" * 1000).hexdigest()
    return str(DigestCache(Path(cache_dir), 10**9).entry({"a.bin": digest}, fetch))


def test_cache_shared_by_processes_downloads_once(tmp_path: Path) -> None:
    from service.storage.objects import LocalObjectStore

    store = LocalObjectStore(tmp_path / "store")
    src = tmp_path / "a.bin"
    src.write_bytes(b"shared" * 1000)
    store.put_blob(src)
    log = tmp_path / "fetches.log"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        paths = pool.map(_materialize, [(str(tmp_path / "store"), str(tmp_path / "cache"), str(log))] * 8)
    assert len(set(paths)) == 1 and (Path(paths[0]) / "a.bin").read_bytes() == src.read_bytes()
    assert len(log.read_text().splitlines()) == 1, "several processes downloaded the same entry"


def test_cache_lru_eviction_bounded(tmp_path: Path, monkeypatch) -> None:
    from service.storage.objects import LocalObjectStore

    monkeypatch.setattr(cache_mod, "MIN_IDLE_SECONDS", 0.0)
    store = LocalObjectStore(tmp_path / "store")
    digests = []
    for i in range(4):
        digests.append(store.put_blob(_file(tmp_path / f"f{i}", 1000, seed=i)))
    cache = DigestCache(tmp_path / "cache", max_bytes=2500)
    a = cache.entry({"f.bin": digests[0]}, store.get_blob)
    b = cache.entry({"f.bin": digests[1]}, store.get_blob)
    os.utime(a / ".complete", (1, 1))
    os.utime(b / ".complete", (2, 2))
    cache.entry({"f.bin": digests[0]}, store.get_blob)  # a used again: b is now least recently used
    cache.entry({"f.bin": digests[2]}, store.get_blob)  # 3000 > 2500: evict b
    assert a.exists() and not b.exists() and cache.size() == 2000
    cache.entry({"f.bin": digests[3]}, store.get_blob)
    assert cache.size() <= 2500 and len(cache.entries()) == 2

    monkeypatch.setattr(cache_mod, "MIN_IDLE_SECONDS", 3600.0)  # just used: never evicted, even over the bound
    cache.entry({"f.bin": digests[1]}, store.get_blob)
    assert len(cache.entries()) == 3


def test_sweeper_removes_orphans_only(s3, tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    storage.mirror = Mirror(open_store(f"s3://{s3.bucket}"), DigestCache(storage.cache_dir, 10**9))
    live = _file(storage.dataset_dir("live") / "dataset.zip", 2000, seed=1)
    orphan = storage.artifact_dir("m", 1)  # published, but its version row never committed
    _file(orphan / "weights.safetensors", 2000, seed=2)
    _file(orphan / "spec.json", 2000, seed=1)  # same bytes as the live archive: shared blob
    storage.publish(live)
    storage.publish(orphan)
    before = s3.keys()
    assert storage.mirror.sweep({"datasets/live/dataset.zip"}, grace_seconds=3600) == {"refs": 0, "blobs": 0}
    assert s3.keys() == before  # young objects are left alone (a ref is published before its row commits)
    ckpt = _file(storage.checkpoint_dir("j1") / "checkpoint.pt", 500, seed=9)
    storage.mirror.publish("jobs/j1/checkpoints/epoch-000001", ckpt)  # an active job's checkpoint: kept
    assert storage.mirror.sweep({"datasets/live/dataset.zip"}, grace_seconds=0,
                                keep_prefixes={"jobs/j1/"}) == {"refs": 1, "blobs": 1}
    storage.unpublish("jobs/j1")
    digest = hashlib.sha256(live.read_bytes()).hexdigest()
    assert s3.keys() == sorted([blob_key(digest), "refs/datasets/live/dataset.zip.json"])


def test_upload_answers_503_when_the_store_is_down(client, settings, auth, example_zip, monkeypatch,
                                                   tmp_path: Path) -> None:
    from service.api.app import init_state

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    init_state(client.app, settings.model_copy(update={"STORAGE_URL": "s3://down-bucket/p"}))
    with open(example_zip, "rb") as fh:
        r = client.post("/v1/datasets", headers=auth, files={"file": ("ex.zip", fh, "application/zip")})
    assert r.status_code == 503, r.text
    assert r.headers.get("Retry-After") == "10" and r.json()["error"] == "ServiceUnavailable"
    assert "object store" in r.json()["detail"]
    assert client.get("/v1/datasets", headers=auth).json()["total"] == 0
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith("unreachable"), ready.text
    left = [p for p in (settings.DATA_DIR / "datasets").rglob("*") if p.is_file()]
    assert left == [], left


def test_upload_is_published_and_readable_elsewhere(client, settings, auth, example_zip, s3, tmp_path) -> None:
    from service.api.app import init_state

    init_state(client.app, settings.model_copy(update={"STORAGE_URL": f"s3://{s3.bucket}/hw"}))
    assert client.get("/ready").json()["checks"]["storage"] == "ok"
    with open(example_zip, "rb") as fh:
        r = client.post("/v1/datasets", headers=auth, files={"file": ("ex.zip", fh, "application/zip")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert s3.keys() == sorted([f"hw/blobs/sha256/{body['sha256']}",
                                f"hw/refs/datasets/{body['id']}/dataset.zip.json"])
    elsewhere = storage_for(settings.model_copy(update={"DATA_DIR": tmp_path / "other",
                                                        "STORAGE_URL": f"s3://{s3.bucket}/hw"}))
    assert elsewhere.abs(f"datasets/{body['id']}/dataset.zip").read_bytes() == example_zip.read_bytes()
    assert client.delete(f"/v1/datasets/{body['id']}", headers=auth).status_code == 204
    assert s3.keys() == []
