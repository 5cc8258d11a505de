"""Backbones through the API: GET /v1/capabilities lists the architectures and the installed weights; a job naming
weights that are not installed (or are for another architecture) is refused at creation with a 422."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient

from service.ml.backbones import BACKBONES, build_reference
from service.ml.weights import import_weights
from tests.api.conftest import tiny_spec


def test_capabilities_lists_backbones_and_installed_weights(client: TestClient, auth, settings, tmp_path) -> None:
    assert client.get("/v1/capabilities").status_code == 401
    body = client.get("/v1/capabilities", headers=auth).json()
    assert [b["name"] for b in body["backbones"]] == ["headwise", *BACKBONES]
    assert body["backbones"][0]["default"] and not body["backbones"][0]["pretrainable"]
    r50 = next(b for b in body["backbones"] if b["name"] == "resnet50")
    assert r50["feature_dim"] == 2048 and r50["input_normalization"]["std"] == [0.229, 0.224, 0.225]
    assert body["weights"] == []

    torch.save(build_reference("resnet18", 3).state_dict(), tmp_path / "r.pth")
    info = import_weights(tmp_path / "r.pth", "resnet18", "my-r18", settings.WEIGHTS_DIR)
    body = client.get("/v1/capabilities", headers=auth).json()
    assert body["weights"] == [{"name": "my-r18", "arch": "resnet18", "sha256": info.sha256,
                                "parameters": 11_176_512, "source": "r.pth", "source_sha256": info.source_sha256,
                                "imported_at": info.imported_at}]
    assert "head_types" in body and "losses" in body and "weightings" in body  # the engine's part is still there


def test_job_with_missing_or_mismatched_weights_is_422(client: TestClient, auth, dataset_id, enqueued, settings,
                                                       tmp_path) -> None:
    spec = tiny_spec()
    spec["model"].update(backbone="resnet34", pretrained="nope")
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model_name": "m", "spec": spec}, headers=auth)
    assert r.status_code == 422, r.text
    assert "model.pretrained: weights 'nope' are not installed" in r.text
    torch.save(build_reference("resnet18", 3).state_dict(), tmp_path / "r.pth")
    import_weights(tmp_path / "r.pth", "resnet18", "nope", settings.WEIGHTS_DIR)
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model_name": "m", "spec": spec}, headers=auth)
    assert r.status_code == 422 and "are for resnet18, not model.backbone resnet34" in r.text
    spec["model"]["backbone"] = "resnet18"
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model_name": "m", "spec": spec}, headers=auth)
    assert r.status_code == 202, r.text
    assert enqueued.job_ids == [r.json()["id"]]


def test_pretrained_backbone_model_serves_through_predict(client: TestClient, auth, app, settings, example_zip,
                                                         tmp_path) -> None:
    """A mobilenet_v3_large model trained from imported weights is served by /predict with ONNX Runtime (model.onnx
    in the artifact) and with torch (no model.onnx): same answers as the engine's Predictor on the artifact."""
    import hashlib
    import io
    import json
    import shutil

    import numpy as np
    from PIL import Image

    from service.ml.artifact import save_artifact
    from service.ml.data import load_training_data
    from service.ml.export import ONNX_FILE, export_onnx
    from service.ml.inference import Predictor
    from service.ml.spec import parse_spec
    from service.ml.train import train
    from tests.api.test_onnx import register

    torch.save(build_reference("mobilenet_v3_large", 4).state_dict(), tmp_path / "m.pth")
    import_weights(tmp_path / "m.pth", "mobilenet_v3_large", "mnv3", settings.WEIGHTS_DIR)
    spec_d = tiny_spec()
    spec_d["model"].update(backbone="mobilenet_v3_large", pretrained="mnv3")
    spec_d["training"].update(freeze_backbone_epochs=1)
    spec, data = load_training_data(parse_spec(spec_d), example_zip, tmp_path / "cache")
    result = train(spec, data, device="cpu", weights_dir=settings.WEIGHTS_DIR)
    plain = tmp_path / "plain"
    save_artifact(result, plain)
    with_onnx = tmp_path / "onnx"
    shutil.copytree(plain, with_onnx)
    onnx = export_onnx(result.spec, result.state_dict, result.normalization)
    (with_onnx / ONNX_FILE).write_bytes(onnx)
    sums = json.loads((with_onnx / "checksums.json").read_text())
    (with_onnx / "checksums.json").write_text(json.dumps({**sums, ONNX_FILE: hashlib.sha256(onnx).hexdigest()}))
    register(settings, with_onnx, "mnv3-onnx")
    register(settings, plain, "mnv3-torch")

    rng = np.random.default_rng(1)
    blobs = []
    for _ in range(3):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    files = [("files", (f"i{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    answers = {}
    for name in ("mnv3-onnx", "mnv3-torch"):
        r = client.post(f"/v1/models/{name}/predict", headers=auth, files=files)
        assert r.status_code == 200, r.text
        answers[name] = r.json()["predictions"]
    runtimes = {e.predictor.runtime_name for e in (app.state.predictors.peek(k) for k in app.state.predictors.keys())}
    assert runtimes == {"onnxruntime", "torch"}
    want = Predictor.load(plain).predict([Image.open(io.BytesIO(b)) for b in blobs])
    for got in answers.values():
        for x, y in zip(got, want, strict=True):
            for task in y:
                assert x[task].get("label") == y[task].get("label") and x[task].get("gated") == y[task].get("gated")
                if y[task].get("value") is not None:
                    assert abs(x[task]["value"] - y[task]["value"]) < 1e-4
    meta = json.loads((plain / "meta.json").read_text())
    assert meta["backbone"]["pretrained"]["name"] == "mnv3" and meta["backbone"]["arch"] == "mobilenet_v3_large"
