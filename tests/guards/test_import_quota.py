"""Dataset imports count in the team's storage quota: while under way (the bytes the worker found when listing the
source) and once finished (the dataset row). Over the quota an import is refused like an upload (413 at the API;
the worker fails the import with the same message before downloading), leaving no dataset row or file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from service.api.app import init_state
from service.db import imports as imports_repo
from service.db.base import session_scope
from service.db.tables import Dataset, DatasetImport
from tests.api.conftest import (  # noqa: F401 - pytest fixtures
    app,
    auth,
    base_app,
    client,
    enqueued,
    example_zip,
    make_key,
    settings,
    template_db,
    upload,
)
from tests.scale.conftest import moto_server, s3  # noqa: F401 - pytest fixtures
from tests.worker.conftest import make_env

pytestmark = pytest.mark.slow


def _import(source: str) -> DatasetImport:
    from worker.imports import run_import

    with session_scope() as session:
        import_id = imports_repo.create_import(session=session, team="default", source=source, name=None,
                                               spec=None).id
    run_import(import_id)
    with session_scope() as session:
        row = session.get(DatasetImport, import_id)
        session.expunge(row)
        return row


def test_the_worker_refuses_an_import_over_the_quota_before_downloading(s3, tmp_path: Path, monkeypatch):  # noqa: F811
    from tests.e2e.harness import make_dataset

    archive = make_dataset(tmp_path / "src", n=24)
    size = archive.stat().st_size
    data = tmp_path / "data"
    data.mkdir()
    make_env(monkeypatch, data, f"sqlite:///{data / 'hw.db'}", IMPORT_ALLOWED_PREFIXES=f"s3://{s3.bucket}/in/",
             TEAM_MAX_STORAGE_BYTES=str(int(size * 1.5)))
    bucket = s3.client()
    bucket.put_object(Bucket=s3.bucket, Key="in/a.zip", Body=archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if not name.endswith("/"):
                bucket.put_object(Bucket=s3.bucket, Key=f"in/shapes/{name}", Body=zf.read(name))

    first = _import(f"s3://{s3.bucket}/in/a.zip")
    assert first.status == "succeeded", first.error
    assert first.progress["bytes"] == 0  # the bytes it reserved while under way moved to the dataset row
    with session_scope() as session:
        assert session.get(Dataset, first.dataset_id).size_bytes == size

    for source in (f"s3://{s3.bucket}/in/a.zip", f"s3://{s3.bucket}/in/shapes/"):
        refused = _import(source)
        assert refused.status == "failed" and refused.dataset_id is None
        assert refused.error.startswith("storage quota: team 'default' stores "), refused.error
        assert "this import of " in refused.error and "does not fit" in refused.error, refused.error
        assert refused.progress.get("objects", 0) == 0  # refused before downloading anything
    with session_scope() as session:
        assert session.query(Dataset).count() == 1
    assert len(list((data / "datasets").iterdir())) == 1  # no partial dataset directory
    assert not list(data.glob("**/headwise-import-*"))  # no leftover download


def test_imports_under_way_count_at_the_api(client, app, settings, auth, example_zip):  # noqa: F811
    limit = 3 * example_zip.stat().st_size
    init_state(app, settings.model_copy(update={"TEAM_MAX_STORAGE_BYTES": limit,
                                                "IMPORT_ALLOWED_PREFIXES": "s3://bucket/in/"}))
    with session_scope(settings.DATABASE_URL) as session:  # a worker is downloading 2/3 of the quota
        row = imports_repo.create_import(session=session, team="alpha", source="s3://bucket/in/x/", name=None,
                                         spec=None)
        row.status, row.progress = "running", {"objects": 3, "total": 9, "fraction": 0.33, "bytes": 2 * limit // 3}
        import_id = row.id
    usage = client.get("/v1/usage", headers=auth).json()["storage_bytes"]
    assert usage["imports"] == 2 * limit // 3 and usage["used"] == usage["imports"] + usage["datasets"]

    assert upload(client, auth, example_zip).status_code == 201  # 1/3 left: one archive fits
    r = upload(client, auth, example_zip)
    assert r.status_code == 413 and "imports under way" in r.json()["detail"], r.text
    r = client.post("/v1/datasets", headers=auth, json={"source": "s3://bucket/in/y/"})
    assert r.status_code == 413 and "a new import of 1 bytes does not fit" in r.json()["detail"], r.text

    with session_scope(settings.DATABASE_URL) as session:  # the import failed: its bytes are free again
        session.get(DatasetImport, import_id).status = "failed"
    assert client.get("/v1/usage", headers=auth).json()["storage_bytes"]["imports"] == 0
    assert upload(client, auth, example_zip).status_code == 201
