"""Datasets: upload (zip, npz), rejections leave no row and no file, list/get/delete, audit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.db.base import session_scope
from service.db.tables import Dataset, Job
from tests.api.conftest import data_files, make_zip, png_bytes, tiny_spec, upload


def _rows(settings) -> int:
    with session_scope(settings.DATABASE_URL) as s:
        return s.query(Dataset).count()


def test_upload_zip(client: TestClient, auth, example_zip: Path, settings) -> None:
    r = upload(client, auth, example_zip, name="shapes")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "shapes" and body["format"] == "zip" and body["num_samples"] == 48
    assert set(body["columns"]) == {"category", "is_big", "size", "hue"}
    assert body["columns"]["category"]["kind"] == "categorical"
    assert body["columns"]["category"]["values"] == ["circle", "none", "square"]
    assert body["columns"]["size"]["kind"] == "numeric" and "values" not in body["columns"]["size"]
    assert body["created_at"].endswith("Z") and body["warnings"] == []
    assert body["size_bytes"] == example_zip.stat().st_size
    files = data_files(settings)
    assert f"datasets/{body['id']}/dataset.zip" in files and f"datasets/{body['id']}/table.json" in files
    assert not [f for f in files if f.startswith("tmp/")]
    assert client.get(f"/v1/datasets/{body['id']}", headers=auth).json()["num_samples"] == 48


def test_upload_npz_default_name(client: TestClient, auth, example_npz: Path) -> None:
    r = upload(client, auth, example_npz)
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "npz" and r.json()["name"] == "example" and r.json()["num_samples"] == 24


def test_list_and_paging(client: TestClient, auth, example_zip: Path) -> None:
    ids = [upload(client, auth, example_zip, name=f"d{i}").json()["id"] for i in range(3)]
    page = client.get("/v1/datasets?limit=2", headers=auth).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["limit"] == 2
    rest = client.get("/v1/datasets?limit=2&offset=2", headers=auth).json()["items"]
    assert {d["id"] for d in page["items"] + rest} == set(ids)


def _bad_uploads(tmp: Path, example_zip: Path) -> list[tuple[str, Path, int, str]]:
    labels = b"image,category\nimages/a.png,cat\n"
    truncated = png_bytes()[:40]
    return [
        ("wrong-extension", _write(tmp / "data.tar", b"x" * 100), 415, "UnsupportedMediaType"),
        ("not-a-zip", _write(tmp / "junk.zip", b"this is not a zip archive"), 422, "DataError"),
        ("no-labels", make_zip(tmp / "nolabels.zip", {"images/a.png": png_bytes()}), 422, "DataError"),
        ("missing-image", make_zip(tmp / "missing.zip", {"labels.csv": labels}), 422, "DataError"),
        ("truncated-image", make_zip(tmp / "trunc.zip", {"labels.csv": labels, "images/a.png": truncated}),
         422, "DataError"),
        ("traversal", make_zip(tmp / "trav.zip", {"labels.csv": b"image,c\n../a.png,x\n", "../a.png": png_bytes()}),
         422, "DataError"),
        ("bad-npz", _write(tmp / "bad.npz", b"PK\x03\x04garbage"), 422, "DataError"),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", range(7))
def test_rejected_upload_leaves_nothing(client: TestClient, auth, settings, tmp_path, example_zip, case) -> None:
    name, path, status, kind = _bad_uploads(tmp_path, example_zip)[case]
    before = data_files(settings)
    r = upload(client, auth, path)
    assert r.status_code == status, (name, r.text)
    assert r.json()["error"] == kind, (name, r.json())
    assert r.json()["detail"]
    assert _rows(settings) == 0 and data_files(settings) == before


def test_content_length_over_cap_is_413_before_reading(app, client: TestClient, auth, settings, example_zip) -> None:
    app.state.settings.MAX_UPLOAD_BYTES = 1000
    r = upload(client, auth, example_zip)
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    assert _rows(settings) == 0 and data_files(settings) == []


def test_streaming_cap_without_content_length(app, client: TestClient, auth, settings) -> None:
    app.state.settings.MAX_UPLOAD_BYTES = 10_000
    boundary = "xyzzy"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(100):
            yield b"\0" * 1024  # 100 KiB, no Content-Length (chunked)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/v1/datasets", headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                    content=body())
    assert r.status_code == 413, r.text
    assert _rows(settings) == 0 and data_files(settings) == []


def test_upload_requires_multipart_and_file(client: TestClient, auth) -> None:
    r = client.post("/v1/datasets", headers=auth, json={"file": "x"})
    assert r.status_code == 415
    r = client.post("/v1/datasets", headers=auth, files={"other": ("a.zip", b"x")})
    assert r.status_code == 422 and "file" in r.json()["detail"]
    r = client.post("/v1/datasets", headers=auth, data={"name": "only a name"}, files={"x": ("", b"")})
    assert r.status_code == 422


def test_delete(client: TestClient, auth, dataset_id, settings) -> None:
    r = client.delete(f"/v1/datasets/{dataset_id}", headers=auth)
    assert r.status_code == 204 and r.content == b""
    assert _rows(settings) == 0 and not (settings.DATA_DIR / "datasets" / dataset_id).exists()
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 404
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 404


@pytest.mark.parametrize("status", ["queued", "running"])
def test_delete_conflicts_with_active_job(client: TestClient, auth, dataset_id, settings, status) -> None:
    job = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "model_name": "m",
                                                      "spec": tiny_spec()}).json()["id"]
    with session_scope(settings.DATABASE_URL) as s:
        s.get(Job, job).status = status
    r = client.delete(f"/v1/datasets/{dataset_id}", headers=auth)
    assert r.status_code == 409 and r.json()["error"] == "Conflict" and job in r.json()["detail"]
    with session_scope(settings.DATABASE_URL) as s:
        s.get(Job, job).status = "succeeded"
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204
    assert client.get(f"/v1/jobs/{job}", headers=auth).json()["dataset_id"] is None


def test_audit(client: TestClient, auth, dataset_id) -> None:
    r = client.post(f"/v1/datasets/{dataset_id}/audit", headers=auth, json={"spec": tiny_spec()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spec_errors"] == []
    assert body["audit"]["num_samples"] == 48
    assert set(body["audit"]["tasks"]) == {"category", "is_big", "size", "hue"}
    assert "class_counts" in body["audit"]["tasks"]["category"]


def test_audit_reports_spec_errors(client: TestClient, auth, dataset_id) -> None:
    spec = tiny_spec()
    spec["tasks"][1]["name"] = "is_bigg"
    r = client.post(f"/v1/datasets/{dataset_id}/audit", headers=auth, json={"spec": spec})
    assert r.status_code == 200
    assert any(e.startswith("tasks[1].name") and "is_bigg" in e for e in r.json()["spec_errors"])
    spec = tiny_spec()
    spec["tasks"][0]["type"] = "nonsense"
    r = client.post(f"/v1/datasets/{dataset_id}/audit", headers=auth, json={"spec": spec})
    assert r.status_code == 200 and r.json()["audit"] is None
    assert any("tasks[0]" in e for e in r.json()["spec_errors"])


def test_audit_unknown_dataset_404(client: TestClient, auth) -> None:
    assert client.post("/v1/datasets/nope/audit", headers=auth, json={"spec": tiny_spec()}).status_code == 404


def test_jpeg_bytes_named_zip_rejected(client: TestClient, auth, settings) -> None:
    r = client.post("/v1/datasets", headers=auth, files={"file": ("x.zip", io.BytesIO(png_bytes()))})
    assert r.status_code == 422 and _rows(settings) == 0
