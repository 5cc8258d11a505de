"""`POST /v1/datasets {"source": "s3://..."}`: the trust model at the API (only HEADWISE_IMPORT_ALLOWED_PREFIXES),
and the worker's import against a REAL S3 server process (moto): a prefix with labels.csv + images, a .zip object,
and the same errors as an upload for broken data."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from service.db import imports as imports_repo
from service.db.base import session_scope
from service.db.tables import Dataset, DatasetImport
from tests.worker.conftest import make_env

pytestmark = pytest.mark.slow


def test_api_checks_the_source_before_queueing(client, settings, auth, monkeypatch) -> None:
    from service.api.app import init_state

    sent: list[str] = []
    monkeypatch.setattr("service.queue.enqueue_import", sent.append)
    post = lambda body: client.post("/v1/datasets", headers=auth, json=body)  # noqa: E731
    r = post({"source": "s3://any/prefix/"})
    assert r.status_code == 403 and "disabled" in r.json()["detail"], r.text
    init_state(client.app, settings.model_copy(update={"IMPORT_ALLOWED_PREFIXES": "s3://team-a/data/, s3://b2"}))
    for body, status, needle in (({"source": "s3://team-a/other/"}, 403, "not under an allowed import prefix"),
                                 ({"source": "s3://team-a/data-evil/"}, 403, "not under"),
                                 ({"source": "s3://team-a/data/../x/"}, 422, "'..'"),
                                 ({"source": "http://team-a/data/"}, 422, "expected s3://"),
                                 ({"source": "s3://team-a/data/set"}, 422, "must end with '/'"),
                                 ({"source": "s3://team-a/data/", "bogus": 1}, 422, "bogus"),
                                 ({"sauce": "s3://team-a/data/"}, 415, "multipart/form-data")):
        r = post(body)
        assert r.status_code == status and needle in r.json()["detail"], (body, r.text)
    assert sent == []
    r = post({"source": "s3://team-a/data/shapes/", "name": "shapes"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["dataset_id"] is None and sent == [body["id"]]
    got = client.get(f"/v1/datasets/imports/{body['id']}", headers=auth).json()
    assert got["source"] == "s3://team-a/data/shapes/" and got["status"] == "queued"
    assert client.get("/v1/datasets/imports/nope", headers=auth).status_code == 404


def _import(source: str, spec: dict | None = None) -> DatasetImport:
    from worker.imports import run_import

    with session_scope() as session:
        row = imports_repo.create_import(session=session, team="default", source=source, name=None, spec=spec)
        import_id = row.id
    run_import(import_id)
    with session_scope() as session:
        row = session.get(DatasetImport, import_id)
        session.expunge(row)
        return row


def test_worker_imports_a_prefix_and_an_archive(s3, tmp_path: Path, monkeypatch) -> None:
    from tests.e2e.harness import make_dataset

    data = tmp_path / "data"
    data.mkdir()
    make_env(monkeypatch, data, f"sqlite:///{data / 'hw.db'}", STORAGE_URL=f"s3://{s3.bucket}/store",
             IMPORT_ALLOWED_PREFIXES=f"s3://{s3.bucket}/incoming/")
    archive = make_dataset(tmp_path / "src", n=24)
    client = s3.client()
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if not name.endswith("/"):
                client.put_object(Bucket=s3.bucket, Key=f"incoming/shapes/{name}", Body=zf.read(name))
    client.put_object(Bucket=s3.bucket, Key="incoming/shapes.zip", Body=archive.read_bytes())

    done = _import(f"s3://{s3.bucket}/incoming/shapes/")
    assert (done.status, done.error) == ("succeeded", None), done.error
    assert done.progress["objects"] == done.progress["total"] == 25 and done.progress["fraction"] == 1.0
    with session_scope() as session:
        ds = session.get(Dataset, done.dataset_id)
        assert ds.num_samples == 24 and ds.name == "shapes" and ds.format == "zip"
    assert any(k.startswith(f"store/refs/datasets/{done.dataset_id}/") for k in s3.keys())

    zipped = _import(f"s3://{s3.bucket}/incoming/shapes.zip")
    assert zipped.status == "succeeded", zipped.error
    with session_scope() as session:
        assert session.get(Dataset, zipped.dataset_id).sha256 == __import__("hashlib").sha256(
            archive.read_bytes()).hexdigest()

    # the same errors as an upload, and a clear one for a source that is not a dataset
    missing = _import(f"s3://{s3.bucket}/incoming/nothing-here/")
    assert missing.status == "failed" and "no labels.csv or labels.jsonl" in missing.error
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("labels.csv", "image,category\nmissing.png,circle\n")
    client.put_object(Bucket=s3.bucket, Key="incoming/broken.zip", Body=buf.getvalue())
    broken = _import(f"s3://{s3.bucket}/incoming/broken.zip")
    assert broken.status == "failed" and "missing.png" in broken.error, broken.error
    outside = _import(f"s3://{s3.bucket}/elsewhere/x.zip")  # checked again by the worker
    assert outside.status == "failed" and "not under an allowed import prefix" in outside.error
    with session_scope() as session:
        assert session.query(Dataset).count() == 2
