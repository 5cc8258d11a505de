"""ONNX export (service/ml/export.py): matches torch on every head, is rejected when it does not, is stored in the
artifact with its sha256; ONNX Runtime gives the same predictions and gating as torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.ml.artifact import ArtifactError, read_optional_file, save_artifact
from service.ml.export import (
    INPUT_NAME,
    ONNX_FILE,
    ExportError,
    OnnxRunner,
    check_onnx,
    export_checked,
    export_onnx,
)
from service.ml.inference import Predictor

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for 2 epochs on the example shapes (gated regression, sparse heads) + its val images."""
    from service.ml.data import load_training_data
    from service.ml.examples import example_spec, make_example_dataset
    from service.ml.spec import parse_spec
    from service.ml.train import stratified_split, train

    tmp = tmp_path_factory.mktemp("export")
    path = make_example_dataset(tmp / "shapes.zip", n=80, image_size=24)
    raw = example_spec(image_size=24, epochs=2)
    raw["model"].update(width=8, depth=2, head_hidden=16)
    spec, data = load_training_data(parse_spec(raw), path, tmp / "cache")
    result = train(spec, data, device="cpu")
    _, val = stratified_split(spec, data)
    images = np.asarray(data.images)[val]
    # Two short epochs rarely predict "none": shift its logit so about half the val images gate "size" off.
    logits = Predictor.from_result(result).outputs(images)["category"]
    bias = result.state_dict["heads.0.3.bias"]
    bias[0] -= float(np.median(logits[:, 0] - logits[:, 1:].max(axis=1)))
    return result, images


@pytest.fixture
def predictor(trained) -> Predictor:
    return Predictor.from_result(trained[0])


def test_export_matches_torch_on_every_head(trained, predictor) -> None:
    result, val = trained
    data, report = export_checked(predictor, val)
    assert report["images"] == len(val) > 0
    assert set(report["max_abs_diff"]) == set(result.spec.task_names)
    assert all(d <= 1e-4 for d in report["max_abs_diff"].values())
    assert report["gate_decisions_identical"] is True
    runner = OnnxRunner(data, result.spec.task_names)
    inputs = runner.session.get_inputs()
    assert [i.name for i in inputs] == [INPUT_NAME] and inputs[0].type == "tensor(uint8)"
    assert [o.name for o in runner.session.get_outputs()] == result.spec.task_names
    for n in (1, 7):  # dynamic batch
        out = runner(val[:n])
        assert out["category"].shape == (n, 3) and out["size"].shape == (n,)


def test_onnx_runtime_predictions_and_gating_equal_torch(trained, predictor) -> None:
    result, val = trained
    rng = np.random.default_rng(1)
    images = np.concatenate([val, rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8)])
    reference = predictor.predict_arrays(images, raw=True)
    predictor.runtime = OnnxRunner(export_onnx(result.spec, result.state_dict), result.spec.task_names)
    got = predictor.predict_arrays(images, raw=True)
    assert len(got) == len(reference)
    gated = 0
    for a, b in zip(got, reference, strict=True):
        assert list(a) == list(b)  # task order
        for task in a:
            assert a[task].get("gated") == b[task].get("gated")
            assert a[task].get("reason") == b[task].get("reason")
            assert a[task].get("label") == b[task].get("label")
            if b[task].get("value") is not None:
                assert a[task]["value"] == pytest.approx(b[task]["value"], abs=1e-4)
            for cls, p in b[task].get("probabilities", {}).items():
                assert a[task]["probabilities"][cls] == pytest.approx(p, abs=1e-5)
        gated += bool(b["size"].get("gated"))
    assert 0 < gated < len(images)  # the fixture exercises both sides of the gate


def test_a_perturbed_export_is_rejected_naming_the_head(trained, predictor) -> None:
    result, val = trained
    state = {k: v.clone() for k, v in result.state_dict.items()}
    hue = result.spec.task_names.index("hue")
    state[f"heads.{hue}.3.bias"] += 1e-3  # a small drift in one head only
    bad = export_onnx(result.spec, state)
    with pytest.raises(ExportError, match=r"head 'hue' differs from torch by up to 0\.001 \(limit 0\.0001\)") as err:
        check_onnx(bad, predictor, val)
    assert "'category'" not in str(err.value) and f"on {len(val)} validation images" in str(err.value)


def test_changed_gate_decisions_are_rejected_even_within_tolerance(trained, predictor) -> None:
    result, val = trained
    state = {k: v.clone() for k, v in result.state_dict.items()}
    cat = result.spec.task_names.index("category")
    state[f"heads.{cat}.3.bias"][0] += 50.0  # "none" wins everywhere: every size is gated
    bad = export_onnx(result.spec, state)
    with pytest.raises(ExportError, match=r"head 'size' is gated differently from torch on \d+ of"):
        check_onnx(bad, predictor, val, tolerance=1e3)


def test_no_images_and_broken_bytes_are_export_errors(trained, predictor) -> None:
    data = export_onnx(trained[0].spec, trained[0].state_dict)
    with pytest.raises(ExportError, match="no images"):
        check_onnx(data, predictor, trained[1][:0])
    with pytest.raises(ExportError, match="ONNX Runtime cannot load the model"):
        OnnxRunner(b"not an onnx model", ["category"])


def test_onnx_metadata_documents_tasks_and_normalisation(trained) -> None:
    import onnx

    result = trained[0]
    proto = onnx.load_from_string(export_onnx(result.spec, result.state_dict, result.normalization))
    props = {p.key: p.value for p in proto.metadata_props}
    assert [t["name"] for t in json.loads(props["headwise.tasks"])] == result.spec.task_names
    assert json.loads(props["headwise.normalization"]) == result.normalization
    assert "uint8" in props["headwise.input"] and INPUT_NAME in proto.doc_string


def test_artifact_stores_onnx_with_its_sha256(trained, tmp_path: Path) -> None:
    result = trained[0]
    data = export_onnx(result.spec, result.state_dict)
    checksums = save_artifact(result, tmp_path / "with", extra_files={ONNX_FILE: data},
                              extra_meta={"onnx": {"opset": 17}})
    assert checksums[ONNX_FILE] == hashlib.sha256(data).hexdigest()
    assert json.loads((tmp_path / "with" / "checksums.json").read_text())[ONNX_FILE] == checksums[ONNX_FILE]
    assert json.loads((tmp_path / "with" / "meta.json").read_text())["onnx"] == {"opset": 17}
    assert read_optional_file(tmp_path / "with", ONNX_FILE) == data
    save_artifact(result, tmp_path / "without")  # an older artifact: no ONNX file, nothing to verify
    assert read_optional_file(tmp_path / "without", ONNX_FILE) is None
    (tmp_path / "with" / ONNX_FILE).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ArtifactError, match="model.onnx: sha256 mismatch"):
        read_optional_file(tmp_path / "with", ONNX_FILE)
    (tmp_path / "with" / ONNX_FILE).unlink()
    with pytest.raises(ArtifactError, match="model.onnx: cannot read"):
        read_optional_file(tmp_path / "with", ONNX_FILE)
    with pytest.raises(ValueError, match="not an optional artifact file"):
        save_artifact(result, tmp_path / "x", extra_files={"evil.pkl": b""})
    assert torch.equal(Predictor.load(tmp_path / "without").model.heads[0][-1].bias,
                       result.state_dict["heads.0.3.bias"])
