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
