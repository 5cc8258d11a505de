"""Dataset ingestion shared by `POST /v1/datasets` and the one-call `POST /v1/jobs` (multipart): stream the
archive to DATA_DIR/tmp, then (blocking, in the threadpool) decode it, verify every image, optionally check
every label against a spec, and move it into datasets/<id>/ inside the caller's transaction.

Nothing is left behind on any error: the temporary file is removed by `receive_archive`'s caller (`received`),
and `store_dataset`'s caller rolls back + removes the dataset directory when its transaction fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request

from service.api import quotas
from service.api.uploads import FileSink, StreamingForm, check_content_length
from service.config import Settings
from service.db import datasets as datasets_repo
from service.db import jobs as jobs_repo
from service.db.tables import Dataset, new_id
from service.errors import InsufficientStorageError, UnsupportedMediaError, ValidationError
from service.storage import Storage
from service.storage.local import is_disk_full

FORMATS = {".zip": "zip", ".npz": "npz"}
FORM_OVERHEAD = 1024 * 1024  # multipart headers and text fields on top of the file cap
DISK_FULL = "the server's disk is full: the upload was not stored; try again later or ask the operator"


@dataclass
class Received:
    path: Path
    filename: str
    fmt: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


def upload_allowance(request: Request, session: Session, storage: Storage, settings: Settings,
                     team: str) -> tuple[int | None, str]:
    """(bytes the team may still store, the 413 message past them), None when unlimited. A first cheap check of
    the announced size (Content-Length) against the storage quota: 413 before any byte is read."""
    try:
        announced = max(int(request.headers.get("content-length") or 0) - FORM_OVERHEAD, 0)
    except ValueError:
        announced = 0
    # at least 1 byte: a full quota answers 413 even without a Content-Length (not the artifact's 507)
    left = quotas.check_storage(session, storage, settings, team, incoming=max(announced, 1))
    session.rollback()  # end the read transaction: the upload may stream for minutes
    limit = settings.TEAM_MAX_STORAGE_BYTES
    if not limit:
        return None, ""
    return left, (f"storage quota: {quotas.storage_detail(team, limit - left, limit)}; the file is larger than "
                  f"the {left} bytes left: delete datasets or model versions first")


@asynccontextmanager
async def received(request: Request, settings: Settings, storage: Storage, *, quota_left: int | None = None,
                   quota_message: str = "") -> AsyncIterator[Received]:
    """Stream the multipart body: exactly one archive in `file` (.zip/.npz) plus text fields. The temporary
    file is removed on exit (a successful ingest has moved it away already). quota_left (upload_allowance)
    caps the file below MAX_UPLOAD_BYTES with quota_message (413); a full disk answers 507."""
    cap = settings.MAX_UPLOAD_BYTES
    check_content_length(request.headers.get("content-length"), cap + FORM_OVERHEAD)
    tmp_paths: list[Path] = []

    def open_file(name: str, filename: str, _ctype: str) -> FileSink:
        if name != "file":
            raise ValidationError(f"unexpected file field '{name}': send the archive as 'file'")
        if tmp_paths:
            raise ValidationError("file: send exactly one archive")
        suffix = Path(filename).suffix.lower()
        if suffix not in FORMATS:
            raise UnsupportedMediaError(f"file: '{filename}' is not a .zip or .npz archive")
        tmp_paths.append(storage.new_tmp_path(suffix))
        if quota_left is not None and quota_left < cap:  # the team's storage quota is the tighter bound
            return FileSink(tmp_paths[-1], quota_left, label=f"file '{filename}'", too_large=quota_message)
        return FileSink(tmp_paths[-1], cap, label=f"file '{filename}'")

    form = StreamingForm(request.headers.get("content-type", ""), open_file)
    try:
        try:
            await form.consume(request.stream(), cap + FORM_OVERHEAD)
        except OSError as exc:  # the temporary file could not be written
            if is_disk_full(exc):
                raise InsufficientStorageError(DISK_FULL) from None
            raise
        if not form.files:
            raise ValidationError("file: field required (a .zip or .npz archive)")
        _name, filename, sink = form.files[0]
        assert isinstance(sink, FileSink)
        yield Received(sink.path, Path(filename).name, FORMATS[sink.path.suffix], sink.size, sink.sha256,
                       dict(form.fields))
    finally:
        form.close_all()
        for path in tmp_paths:
            storage.remove(path)


def dataset_name(value: str | None, filename: str, field_name: str = "name") -> str:
    name = (value or "").strip() or Path(filename).stem or "dataset"
    if len(name) > 200:
        raise ValidationError(f"{field_name}: at most 200 characters")
    return name


def spec_field(text: str | None, field_name: str = "spec") -> dict[str, Any] | None:
    """A form field holding the spec as JSON text -> dict (None when absent) -> 422 naming the field."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{field_name}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValidationError(f"{field_name}: must be a JSON object (the task spec)")
    return value


def check_archive(got: Received, spec: dict[str, Any] | None) -> tuple[Any, Any]:
    """Blocking: decode the archive and every image; with a spec, parse it (SpecError -> 422 naming the field)
    and encode every label (DataError -> 422 naming row and column). -> (table, resolved spec or None)."""
    from service.ml.data import DataError, encode_labels, read_table, resolve_spec, verify_images
    from service.ml.spec import parse_spec

    parsed = parse_spec(spec) if spec is not None else None  # the cheap check first
    tmp = got.path
    try:
        table = read_table(tmp)
        verify_images(tmp, table)  # truncated/undecodable images are rejected now, not in training
        if table.source == tmp.name:
            table.source = got.filename
        if parsed is not None:
            parsed = resolve_spec(parsed, table)  # unknown column, class not in the data
            encode_labels(parsed, table)  # wrong kinds, NaN/inf: naming row and column
    except DataError as exc:  # name the uploaded file, not the temporary one
        raise DataError(str(exc).replace(tmp.name, got.filename)) from None
    return table, parsed


def store_dataset(session: Session, storage: Storage, got: Received, table: Any, *, team: str,
                  name: str, settings: Settings | None = None) -> Dataset:
    """Move the checked archive into datasets/<id>/ and add its row (flushed, NOT committed). On failure the
    caller rolls back and calls storage.remove_dataset(row id or the id in the raised error's context).
    With settings: the team's storage quota is checked again under the team's lock (concurrent uploads cannot
    overshoot it); a full disk answers 507."""
    from service.ml.data import summarize

    dataset_id = new_id()
    final = storage.dataset_dir(dataset_id) / f"dataset.{got.fmt}"
    try:
        if settings is not None and settings.TEAM_MAX_STORAGE_BYTES:
            jobs_repo.lock_team(session=session, team=team)
            quotas.check_storage(session, storage, settings, team, incoming=got.size)
        storage.move_into(got.path, final)
        storage.save_table(dataset_id, table)
        storage.publish(final, got.sha256)  # object storage (503 + Retry-After when down); before the row
        return datasets_repo.insert_dataset(
            session=session, id=dataset_id, team=team, name=name, format=got.fmt, filename=got.filename,
            num_samples=len(table.keys), columns=summarize(table), size_bytes=got.size, sha256=got.sha256,
            path=storage.rel(final),
        )
    except BaseException as exc:
        storage.remove_dataset(dataset_id)
        if is_disk_full(exc):
            raise InsufficientStorageError(DISK_FULL) from None
        raise


def table_warnings(table: Any) -> list[str]:
    return [str(w) for w in getattr(table, "warnings", None) or []]
