"""Model registry reads, artifact download, /predict (multipart and base64) with a real tiny artifact."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.api.conftest import png_bytes


@pytest.fixture
def model(register_model) -> str:
    register_model("shapes")
    return "shapes"


def test_list_get_version(client: TestClient, auth, register_model) -> None:
    assert client.get("/v1/models", headers=auth).json() == {"items": []}
    register_model("shapes")
    register_model("shapes")
    register_model("other")
    items = client.get("/v1/models", headers=auth).json()["items"]
    assert [(m["name"], m["latest_version"]) for m in items] == [("other", 1), ("shapes", 2)]
    assert items[1]["latest"]["version"] == 2 and items[1]["latest"]["metrics"] == {"val_loss": 1.0}
    model = client.get("/v1/models/shapes", headers=auth).json()
    assert [v["version"] for v in model["versions"]] == [1, 2] and model["latest_version"] == 2
    assert model["versions"][0]["spec"]["tasks"][0]["name"] == "category" and model["versions"][0]["job_id"]
    v = client.get("/v1/models/shapes/versions/2", headers=auth).json()
    assert v["name"] == "shapes" and v["version"] == 2
    assert client.get("/v1/models/shapes/versions/3", headers=auth).status_code == 404
    assert client.get("/v1/models/shapes/versions/0", headers=auth).status_code == 422
    assert client.get("/v1/models/nope", headers=auth).status_code == 404


def test_artifact_zip(client: TestClient, auth, model, trained_artifact: Path) -> None:
    r = client.get("/v1/models/shapes/versions/1/artifact", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert 'filename="shapes-v1.zip"' in r.headers["content-disposition"]
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(zf.namelist())
    assert {"model.safetensors", "spec.json", "meta.json", "checksums.json"} <= names
    checksums = json.loads(zf.read("checksums.json"))
    for name, digest in checksums.items():
        assert hashlib.sha256(zf.read(name)).hexdigest() == digest
        assert zf.read(name) == (trained_artifact / name).read_bytes()


def _images() -> list[bytes]:
    red = png_bytes(16, (220, 20, 20))
    gray = png_bytes(24, mode="L")
    buf = io.BytesIO()
    Image.new("RGB", (20, 12), (10, 200, 40)).save(buf, "JPEG")
    return [red, gray, buf.getvalue()]


def test_predict_multipart_and_base64_agree(client: TestClient, auth, model, app, trained_artifact) -> None:
    from service.ml.inference import Predictor

    images = _images()
    files = [("files", (f"i{i}", b, "application/octet-stream")) for i, b in enumerate(images)]
    r = client.post("/v1/models/shapes/predict", headers=auth, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "shapes", "version": 1} and len(body["predictions"]) == 3
    first = body["predictions"][0]
    assert set(first) == {"category", "is_big", "size", "hue"}
    assert first["category"]["label"] in ("none", "circle", "square")
    assert set(first["category"]["probabilities"]) == {"none", "circle", "square"}
    assert isinstance(first["is_big"]["label"], bool) and 0 <= first["is_big"]["probability"] <= 1
    size = first["size"]
    assert (size.get("gated") is True and size["value"] is None and size["reason"]) or isinstance(size["value"], float)
    r2 = client.post("/v1/models/shapes/predict?version=1", headers=auth,
                     json={"images": [base64.b64encode(b).decode() for b in images]})
    assert r2.status_code == 200 and r2.json() == body
    direct = Predictor.load(trained_artifact).predict([Image.open(io.BytesIO(b)) for b in images])
    assert json.loads(json.dumps(direct)) == body["predictions"]  # same outputs, same order
    assert app.state.predictors.loads == 1  # the LRU kept the loaded model


def test_predict_data_url_and_version_404(client: TestClient, auth, model) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert client.post("/v1/models/shapes/predict", headers=auth, json={"images": [data_url]}).status_code == 200
    r = client.post("/v1/models/shapes/predict?version=9", headers=auth, json={"images": [data_url]})
    assert r.status_code == 404
    r = client.post("/v1/models/none/predict", headers=auth, json={"images": [data_url]})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"images": []}, 422, "images: at least one image"),
        ({"images": ["!!not base64!!"]}, 422, "images[0]: not valid base64"),
        ({"images": [base64.b64encode(png_bytes()).decode(), base64.b64encode(b"garbage").decode()]}, 422,
         "images[1]"),
        ({"images": [base64.b64encode(png_bytes()[:50]).decode()]}, 422, "images[0]"),
        ({"images": [base64.b64encode(png_bytes()).decode()] * 5}, 413, "at most 4"),
        ({"pictures": []}, 422, "body.images"),
        ({"images": "abc"}, 422, "body.images"),
    ],
)
def test_predict_bad_json_payloads(client: TestClient, auth, model, payload, status, needle) -> None:
    r = client.post("/v1/models/shapes/predict", headers=auth, json=payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"], r.json()


def test_predict_bad_multipart(client: TestClient, auth, model) -> None:
    files = [("files", ("a", png_bytes(), "image/png")), ("files", ("b", b"not an image", "image/png"))]
    r = client.post("/v1/models/shapes/predict", headers=auth, files=files)
    assert r.status_code == 422 and "files[1]" in r.json()["detail"]
    r = client.post("/v1/models/shapes/predict", headers=auth, files=[("files", ("a", png_bytes(), "x"))] * 5)
    assert r.status_code == 413
    r = client.post("/v1/models/shapes/predict", headers=auth, data={"x": "1"}, files={"other": ("a", b"1")})
    assert r.status_code == 422
    r = client.post("/v1/models/shapes/predict", headers={**auth, "Content-Type": "text/plain"}, content=b"hi")
    assert r.status_code == 415 and r.json()["error"] == "UnsupportedMediaType"


def test_predict_body_cap(app, client: TestClient, auth, model) -> None:
    app.state.settings.MAX_PREDICT_BYTES = 100
    r = client.post("/v1/models/shapes/predict", headers=auth, files=[("files", ("a", png_bytes(64), "x"))])
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
