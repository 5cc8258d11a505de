"""service.ml.examples: the synthetic shapes dataset round-trips through the readers and is learnable."""

from __future__ import annotations

import numpy as np
import pytest

from service.ml.data import audit, encode_labels, load_training_data, read_table, resolve_spec
from service.ml.examples import example_spec, make_example_dataset
from service.ml.spec import parse_spec
from service.ml.train import train


def test_zip_and_npz_carry_the_same_labels(example_zip, example_npz):
    spec = parse_spec(example_spec())
    zl = encode_labels(resolve_spec(spec, read_table(example_zip)), read_table(example_zip))
    nl = encode_labels(resolve_spec(spec, read_table(example_npz)), read_table(example_npz))
    for name in spec.task_names:
        assert np.array_equal(zl[name].mask, nl[name].mask)
        assert np.allclose(zl[name].values, nl[name].values)
    cat = read_table(example_zip).columns["category"]
    size = read_table(example_zip).columns["size"]
    assert all(s is None for c, s in zip(cat, size, strict=True) if c == "none")  # size only for shapes
    result = audit(spec, read_table(example_zip))
    assert result["spec_errors"] == [] and result["label_errors"] == []
    assert result["tasks"]["size"]["gate_violations"] == 0
    assert 0.05 < result["tasks"]["hue"]["fraction"] < 0.25


def test_deterministic_and_formats(tmp_path):
    a = make_example_dataset(tmp_path / "a.zip", n=20, seed=3)
    b = make_example_dataset(tmp_path / "b.zip", n=20, seed=3)
    assert a.read_bytes() == b.read_bytes()
    folder = make_example_dataset(tmp_path, n=5, fmt="npz")
    assert folder == tmp_path / "example.npz" and len(read_table(folder)) == 5
    names = read_table(a).keys
    assert any(k.endswith(".jpg") for k in names) and any(k.endswith(".png") for k in names)


@pytest.mark.slow
def test_the_walkthrough_spec_learns_the_example(tmp_path):
    """The README walk-through's dataset and spec (example-dataset's defaults), trained by the engine: category
    >= 0.95 on its validation split (circle vs square included) and size well under the mean predictor's error.
    20 epochs of 480 images (bench/walkthrough.py times the same through the service)."""
    path = make_example_dataset(tmp_path / "shapes.npz", seed=0)
    spec, data = load_training_data(parse_spec(example_spec()), path, tmp_path / "cache")
    result = train(spec, data, device="cpu")
    tasks = result.metrics["tasks"]
    assert tasks["category"]["accuracy"] >= 0.95, [h["val"]["category"]["accuracy"] for h in result.history]
    baseline = result.metrics["baselines"]["size"]
    assert tasks["size"]["rmse"] < 0.5 * baseline["baseline"], (tasks["size"], baseline)
