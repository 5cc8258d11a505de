"""Artifacts: atomic save, checksums, round trip with identical predictions, tampering detected."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from service.ml.artifact import ArtifactError, load_artifact, save_artifact
from service.ml.inference import Predictor
from service.ml.spec import parse_spec
from service.ml.train import train
from tests.ml.test_train import make_data, tiny_spec


@pytest.fixture(scope="module")
def result():
    return train(parse_spec(tiny_spec(epochs=2)), make_data(), device="cpu")


def test_round_trip_gives_identical_predictions(result, tmp_path):
    checksums = save_artifact(result, tmp_path / "m1")
    assert sorted(p.name for p in (tmp_path / "m1").iterdir()) == [
        "checksums.json",
        "meta.json",
        "model.safetensors",
        "spec.json",
    ]
    assert json.loads((tmp_path / "m1" / "checksums.json").read_text()) == checksums
    assert [p.name for p in tmp_path.iterdir()] == ["m1"]  # no temporary directory left behind
    art = load_artifact(tmp_path / "m1")
    assert art.spec == result.spec
    for k, v in result.state_dict.items():
        assert torch.equal(art.state_dict[k], v)
    meta = art.meta
    assert meta["format_version"] == 1 and meta["best_epoch"] == result.best_epoch
    assert meta["preprocessing"]["image_size"] == 16 and meta["preprocessing"]["resize"] == "bilinear"
    assert meta["label_maps"]["category"]["classes"] == ["none", "circle", "square"]
    assert meta["normalization"] == result.normalization and len(meta["history"]) == 2
    batch = make_data(n=10, seed=5).images
    before = Predictor.from_result(result).predict_arrays(batch, raw=True)
    after = Predictor.load(tmp_path / "m1").predict_arrays(batch, raw=True)
    assert before == after


@pytest.mark.parametrize("name", ["model.safetensors", "spec.json", "meta.json"])
def test_tampered_file_is_rejected_naming_it(result, tmp_path, name):
    save_artifact(result, tmp_path / "m")
    path = tmp_path / "m" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=name):
        load_artifact(tmp_path / "m")


def test_missing_files_and_checksums_are_errors(result, tmp_path):
    save_artifact(result, tmp_path / "m")
    (tmp_path / "m" / "meta.json").unlink()
    with pytest.raises(ArtifactError, match="meta.json"):
        load_artifact(tmp_path / "m")
    with pytest.raises(ArtifactError, match="checksums.json"):
        load_artifact(tmp_path / "nothing")


def test_pickle_in_place_of_weights_is_never_loaded(result, tmp_path):
    """A pickle with a valid checksum still fails: weights are parsed as safetensors only."""
    save_artifact(result, tmp_path / "m")
    d = tmp_path / "m"
    torch.save({"x": torch.zeros(1)}, d / "model.safetensors")
    import hashlib

    sums = json.loads((d / "checksums.json").read_text())
    sums["model.safetensors"] = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    (d / "checksums.json").write_text(json.dumps(sums))
    with pytest.raises(ArtifactError, match="model.safetensors"):
        load_artifact(d)


def test_save_replaces_an_existing_artifact(result, tmp_path):
    save_artifact(result, tmp_path / "m")
    result.history[0]["note"] = "second"
    try:
        save_artifact(result, tmp_path / "m")
    finally:
        del result.history[0]["note"]
    assert load_artifact(tmp_path / "m").meta["history"][0]["note"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_nan_metrics_are_stored_as_null(result, tmp_path):
    result.metrics["val_loss_copy"] = float("nan")
    try:
        save_artifact(result, tmp_path / "m")
    finally:
        del result.metrics["val_loss_copy"]
    assert load_artifact(tmp_path / "m").meta["metrics"]["val_loss_copy"] is None
    assert np.isfinite(result.metrics["val_loss"])
