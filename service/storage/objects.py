"""Object storage behind one small interface, keyed by content: a blob's key is `blobs/sha256/<hex>`, so an object
is immutable once written (same key = same bytes), writing it twice is harmless, and the database rows that
already carry digests (datasets.sha256, model_versions.checksums) say where every byte lives.

Backends:
- LocalObjectStore: a directory (tests, and a shared volume if one is wanted); atomic renames.
- S3ObjectStore: any S3-compatible service (AWS S3, SeaweedFS, Garage, moto), `HEADWISE_STORAGE_URL=s3://bucket/
  prefix`; endpoint, region and credentials come from the standard AWS variables (AWS_ENDPOINT_URL,
  AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) through boto3's own resolution. Uploads go
  through boto3's managed transfer: a file is read in PART_BYTES chunks and sent as a multipart upload above
  MULTIPART_THRESHOLD, so memory stays bounded (at most MAX_CONCURRENCY parts in flight) whatever the size.

Every backend error that means "the store cannot be reached or refused service" becomes
ObjectStoreUnavailableError (HTTP 503 + Retry-After); a missing key is ObjectMissingError.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from service.errors import UnavailableError

MULTIPART_THRESHOLD = 8 * 1024**2
PART_BYTES = 8 * 1024**2
MAX_CONCURRENCY = 4
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ObjectStoreUnavailableError(UnavailableError):
    """The object store is unreachable or failing: retry later (never a client mistake, never a 500)."""

    headers = {"Retry-After": "10"}


class ObjectMissingError(LookupError):
    """No object under that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


def blob_key(digest: str) -> str:
    if not HEX64.match(digest or ""):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return f"blobs/sha256/{digest}"


def digest_of_key(key: str) -> str | None:
    name = key.rsplit("/", 1)[-1]
    return name if key.startswith("blobs/sha256/") and HEX64.match(name) else None


def sha256_file(path: Path, chunk: int = 1024**2) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ObjectStore:
    """The interface. Keys are '/'-separated, relative to the store's root/prefix."""

    url: str

    def put_file(self, key: str, path: Path) -> None:
        raise NotImplementedError

    def get_file(self, key: str, dest: Path) -> None:
        """Download to dest (written through a temporary name beside it, then renamed)."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        raise NotImplementedError

    def ping(self) -> None:
        """Raise ObjectStoreUnavailableError unless the store answers."""
        raise NotImplementedError

    # ---- content-addressed blobs -------------------------------------------------------------------------
    def put_blob(self, path: Path, digest: str | None = None) -> str:
        """Store the file under its digest (skipped when that object already exists) -> the digest."""
        digest = digest or sha256_file(path)
        key = blob_key(digest)
        if not self.exists(key):
            self.put_file(key, path)
        return digest

    def get_blob(self, digest: str, dest: Path) -> None:
        """Download a blob and check its digest (a corrupt or truncated download never lands at dest)."""
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            self.get_file(blob_key(digest), tmp)
            got = sha256_file(tmp)
            if got != digest:
                raise ObjectStoreUnavailableError(f"object {blob_key(digest)} is corrupt (sha256 {got})")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)


class LocalObjectStore(ObjectStore):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"key {key!r} escapes the store")
        return path

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(path, "rb") as src, open(tmp, "wb") as out:
                while block := src.read(1024**2):
                    out.write(block)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise ObjectMissingError(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fh, open(dest, "wb") as out:
            while block := fh.read(1024**2):
                out.write(block)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        for path in sorted(start.rglob("*")) if start.is_dir() else ():
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".") and key.startswith(prefix):
                st = path.stat()
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def ping(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreUnavailableError(f"object store directory {self.root} is missing")


class S3ObjectStore(ObjectStore):
    """boto3 against one bucket and key prefix. Timeouts are short and retries few: an unreachable store must
    turn into a 503 within seconds, not hang a request."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                        s3={"addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "path")})
        self.client = boto3.session.Session().client("s3", config=config)
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_BYTES,
                                       max_concurrency=MAX_CONCURRENCY, use_threads=True)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, *args, **kwargs):
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissingError(what) from None
            raise ObjectStoreUnavailableError(f"object store {self.url}: {what} failed ({code or exc})") from None
        except (BotoCoreError, S3UploadFailedError, OSError) as exc:
            raise ObjectStoreUnavailableError(f"object store {self.url} unreachable: {what}: {exc}") from None

    def put_file(self, key: str, path: Path) -> None:
        self._call(f"upload {key}", self.client.upload_file, str(path), self.bucket, self._key(key),
                   Config=self.transfer)

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call(f"download {key}", self.client.download_file, self.bucket, self._key(key), str(dest),
                   Config=self.transfer)

    def exists(self, key: str) -> bool:
        try:
            self._call(f"head {key}", self.client.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except ObjectMissingError:
            return False

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        pages = self._call(f"list {prefix}", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full)))
        for page in pages:
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][cut:], int(obj["Size"]), obj["LastModified"])

    def ping(self) -> None:
        self._call("head bucket", self.client.head_bucket, Bucket=self.bucket)


def open_store(url: str) -> ObjectStore:
    """HEADWISE_STORAGE_URL -> a store: s3://bucket[/prefix] or file:///dir (or a plain directory path)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"HEADWISE_STORAGE_URL {url!r}: expected s3://bucket/prefix")
        return S3ObjectStore(parsed.netloc, parsed.path)
    if parsed.scheme in ("file", ""):
        return LocalObjectStore(parsed.path or url)
    raise ValueError(f"HEADWISE_STORAGE_URL {url!r}: expected s3://bucket/prefix or file:///directory")
