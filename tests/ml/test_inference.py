"""Predictor: output shapes, de-standardisation, gating with reasons (chains), raw values, preprocessing."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from service.ml.inference import Predictor
from service.ml.network import MultiTaskCNN
from service.ml.spec import parse_spec

SPEC = {
    "tasks": [
        {"name": "category", "type": "multiclass", "classes": ["none", "circle", "square"]},
        {"name": "is_big", "type": "binary", "gate": {"task": "category", "classes": ["circle", "square"]}},
        {"name": "size", "type": "regression", "gate": {"task": "is_big"}},
        {"name": "hue", "type": "regression"},
    ],
    "model": {"image_size": 16, "channels": 3, "width": 8, "depth": 1, "head_hidden": 8},
}


def predictor_with(category: str, big: bool) -> Predictor:
    """A network whose heads output constants: the chosen category, is_big, size 2.0 and hue -1.0
    (standardised), so the gating logic is tested exactly."""
    spec = parse_spec(SPEC)
    torch.manual_seed(0)
    model = MultiTaskCNN(spec)
    with torch.no_grad():
        for head in model.heads:
            last = head[-1]
            last.weight.zero_()
            last.bias.zero_()
        model.heads[0][-1].bias[spec.task("category").classes.index(category)] = 4.0
        model.heads[1][-1].bias.fill_(3.0 if big else -3.0)
        model.heads[2][-1].bias.fill_(2.0)
        model.heads[3][-1].bias.fill_(-1.0)
    norm = {"size": {"mean": 10.0, "std": 3.0}, "hue": {"mean": 0.5, "std": 0.25}}
    return Predictor(spec, model.state_dict(), norm)


def batch(n=3):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_open_gates_give_values_and_destandardise():
    out = predictor_with("circle", True).predict_arrays(batch())
    assert len(out) == 3 and list(out[0]) == ["category", "is_big", "size", "hue"]
    r = out[0]
    assert r["category"]["label"] == "circle" and set(r["category"]["probabilities"]) == {
        "none",
        "circle",
        "square",
    }
    assert sum(r["category"]["probabilities"].values()) == pytest.approx(1.0)
    assert r["is_big"]["label"] is True and r["is_big"]["probability"] == pytest.approx(1 / (1 + np.exp(-3)))
    assert r["is_big"]["gated"] is False
    assert r["size"] == {"value": pytest.approx(16.0), "gated": False}
    assert r["hue"] == {"value": pytest.approx(0.25)}


def test_multiclass_gate_negative_closes_the_whole_chain_with_reason():
    out = predictor_with("none", True).predict_arrays(batch(), raw=True)[1]
    assert out["category"]["label"] == "none"
    assert out["is_big"] == {
        "value": None,
        "label": None,
        "gated": True,
        "reason": "category predicted 'none'",
        "raw": True,
    }
    assert out["size"] == {
        "value": None,
        "gated": True,
        "reason": "category predicted 'none'",
        "raw": pytest.approx(16.0),
    }
    assert out["hue"]["raw"] == pytest.approx(0.25)


def test_binary_gate_negative_reason():
    out = predictor_with("square", False).predict_arrays(batch())[2]
    assert out["is_big"]["label"] is False and out["is_big"]["gated"] is False
    assert out["size"] == {"value": None, "gated": True, "reason": "is_big predicted false"}


def test_preprocess_any_mode_and_size_matches_training_shape():
    p = predictor_with("circle", True)
    images = [
        PIL.Image.new("RGBA", (40, 20), (255, 0, 0, 128)),
        PIL.Image.new("L", (7, 9), 200),
        PIL.Image.new("P", (16, 16)),
    ]
    arr = p.preprocess(images)
    assert arr.shape == (3, 16, 16, 3) and arr.dtype == np.uint8
    assert p.predict(images) == p.predict_arrays(arr)
    assert p.predict([]) == []


def test_batch_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        predictor_with("circle", True).predict_arrays(np.zeros((2, 8, 8, 3), np.uint8))


def test_batched_and_single_predictions_agree():
    p = predictor_with("circle", True)
    x = batch(5)
    together = p.outputs(x)
    alone = [p.outputs(x[i : i + 1]) for i in range(5)]
    for t in together:
        assert np.allclose(together[t], np.concatenate([a[t] for a in alone]), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_predictor_matches_cpu_gating():
    cpu = predictor_with("none", True)
    gpu = Predictor(cpu.spec, cpu.model.state_dict(), cpu.normalization, device="cuda")
    a, b = cpu.predict_arrays(batch()), gpu.predict_arrays(batch())
    assert [r["size"]["reason"] for r in a] == [r["size"]["reason"] for r in b]


def test_end_to_end_from_dataset_file_to_predictions(tmp_path):
    """Example zip -> load_training_data (memmap cache) -> train -> artifact -> Predictor on PIL images."""
    from service.ml.artifact import save_artifact
    from service.ml.data import load_training_data
    from service.ml.examples import example_spec, make_example_dataset
    from service.ml.train import train

    path = make_example_dataset(tmp_path / "shapes.zip", n=40, image_size=16)
    raw = example_spec(image_size=16, epochs=1)
    raw["model"].update(width=8, depth=1)
    spec, data = load_training_data(parse_spec(raw), path, tmp_path / "cache")
    result = train(spec, data, device="cpu")
    save_artifact(result, tmp_path / "model")
    predictor = Predictor.load(tmp_path / "model")
    images = [PIL.Image.new("RGB", (50, 30), (200, 10, 10)), PIL.Image.new("L", (16, 16), 90)]
    out = predictor.predict(images, raw=True)
    assert len(out) == 2 and set(out[0]) == {"category", "is_big", "size", "hue"}
    assert out[0]["category"]["label"] in spec.task("category").classes
    # Both gate outcomes, decided here rather than by what one epoch happened to learn: the loaded network's
    # category head is forced to 'none', then to 'circle' (weights zeroed, one bias up).
    head = predictor.model.heads[spec.task_names.index("category")][-1]
    classes = spec.task("category").classes
    for forced, gated in (("none", True), ("circle", False)):
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[classes.index(forced)] = 5.0
        size = predictor.predict(images, raw=True)[0]["size"]
        assert predictor.predict(images)[0]["category"]["label"] == forced
        if gated:
            assert size["gated"] is True and size["reason"] == "category predicted 'none'" and size["value"] is None
            assert isinstance(size["raw"], float)  # the ungated value is still reported with raw=True
        else:
            assert size["gated"] is False and isinstance(size["value"], float)
    assert np.array_equal(predictor.preprocess(images)[0], predictor.preprocess(images[:1])[0])
