"""GET /v1/models/{name}/versions/{v}/model.onnx and /predict on a version that has model.onnx (ONNX Runtime,
the default runtime) vs one without (torch): same predictions and gating."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.config import Settings
from service.db.base import session_scope
from service.db.tables import Job, ModelVersion, RegisteredModel, new_id
from tests.api.conftest import bearer, png_bytes, tiny_spec

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory, trained_artifact: Path) -> Path:
    """The session's trained artifact plus its checked model.onnx, as the worker writes it."""
    from service.ml.artifact import load_artifact
    from service.ml.export import ONNX_FILE, export_onnx

    out = tmp_path_factory.mktemp("onnx") / "artifact"
    shutil.copytree(trained_artifact, out)
    art = load_artifact(out)
    data = export_onnx(art.spec, art.state_dict, art.meta["normalization"])
    (out / ONNX_FILE).write_bytes(data)
    checksums = json.loads((out / "checksums.json").read_text())
    checksums[ONNX_FILE] = hashlib.sha256(data).hexdigest()
    (out / "checksums.json").write_text(json.dumps(checksums))
    return out


def register(settings: Settings, artifact: Path, name: str) -> dict[str, str]:
    checksums = json.loads((artifact / "checksums.json").read_text())
    with session_scope(settings.DATABASE_URL) as s:
        model = RegisteredModel(team="alpha", name=name)
        s.add(model)
        s.flush()
        job = Job(id=new_id(), team="alpha", model_name=name, spec=tiny_spec(), status="succeeded",
                  progress={}, history=[], metrics={}, cancel_requested=False, attempts=1)
        s.add(job)
        s.flush()
        rel = f"artifacts/{model.id}/1"
        shutil.copytree(artifact, settings.DATA_DIR / rel)
        s.add(ModelVersion(model_id=model.id, version=1, job_id=job.id, spec=tiny_spec(), metrics={},
                           artifact_path=rel, checksums=checksums))
    return checksums


def test_download_model_onnx(client: TestClient, auth, make_key, settings, onnx_artifact, trained_artifact) -> None:
    import onnxruntime

    checksums = register(settings, onnx_artifact, "withonnx")
    register(settings, trained_artifact, "old")
    r = client.get("/v1/models/withonnx/versions/1/model.onnx", headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert 'filename="withonnx-v1.onnx"' in r.headers["content-disposition"]
    assert hashlib.sha256(r.content).hexdigest() == checksums["model.onnx"] == r.headers["etag"].strip('"')
    session = onnxruntime.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input.images"]
    assert [o.name for o in session.get_outputs()] == ["category", "is_big", "size", "hue"]
    out = session.run(None, {"input.images": np.zeros((2, 16, 16, 3), np.uint8)})
    assert out[0].shape == (2, 3) and out[2].shape == (2,)

    r = client.get("/v1/models/old/versions/1/model.onnx", headers=auth)
    assert r.status_code == 404 and "has no ONNX export" in r.json()["detail"]
    assert client.get("/v1/models/withonnx/versions/2/model.onnx", headers=auth).status_code == 404
    no_scope = bearer(make_key(["predict"]))
    r = client.get("/v1/models/withonnx/versions/1/model.onnx", headers=no_scope)
    assert r.status_code == 403 and "models:read" in r.json()["detail"]
    assert client.get("/v1/models/withonnx/versions/1/model.onnx").status_code == 401
    other_team = bearer(make_key(["models:read"], team="beta"))
    assert client.get("/v1/models/withonnx/versions/1/model.onnx", headers=other_team).status_code == 404

    stored = next((settings.DATA_DIR / "artifacts").glob("*/1/model.onnx"))
    stored.write_bytes(stored.read_bytes()[:-1])
    r = client.get("/v1/models/withonnx/versions/1/model.onnx", headers=auth)
    assert r.status_code == 500 and r.json()["error"] == "ArtifactCorrupt"


def test_predict_onnx_version_equals_torch_version(client: TestClient, auth, app, settings, onnx_artifact,
                                                   trained_artifact) -> None:
    register(settings, onnx_artifact, "withonnx")
    register(settings, trained_artifact, "old")
    rng = np.random.default_rng(0)
    blobs = [png_bytes(16, tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(3)]
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    blobs.append(buf.getvalue())
    files = [("files", (f"i{i}", b, "image/png")) for i, b in enumerate(blobs)]
    a = client.post("/v1/models/withonnx/predict", headers=auth, files=files)
    b = client.post("/v1/models/old/predict", headers=auth, files=files)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    runtimes = {e.predictor.runtime_name for e in (app.state.predictors.peek(k) for k in app.state.predictors.keys())}
    assert runtimes == {"onnxruntime", "torch"}
    pa, pb = a.json()["predictions"], b.json()["predictions"]
    for x, y in zip(pa, pb, strict=True):
        for task in y:
            assert x[task].get("label") == y[task].get("label") and x[task].get("gated") == y[task].get("gated")
            if y[task].get("value") is not None:
                assert x[task]["value"] == pytest.approx(y[task]["value"], abs=1e-5)


def test_predict_response_is_encoded_once_and_non_finite_numbers_become_null() -> None:
    from service.api.predict import predict_response

    preds = [{"size": {"value": float("nan"), "gated": False}, "hue": {"value": 0.25}, "c": {"label": "é"}}]
    r = predict_response("m", 3, preds)
    assert r.media_type == "application/json"
    assert json.loads(r.body) == {"model": {"name": "m", "version": 3}, "alias": None,
                                  "predictions": [{"size": {"value": None, "gated": False}, "hue": {"value": 0.25},
                                                   "c": {"label": "é"}}]}
