"""service.ml.examples: the synthetic shapes dataset round-trips through the readers and is learnable."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from service.ml.data import audit, encode_labels, load_training_data, read_table, resolve_spec
from service.ml.examples import example_spec, make_example_dataset
from service.ml.spec import parse_spec


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


def test_learnable_by_a_small_cnn(tmp_path):
    torch.manual_seed(0)
    path = make_example_dataset(tmp_path / "shapes.npz", n=300, seed=0, image_size=16)
    spec, data = load_training_data(parse_spec(example_spec(image_size=16)), path, tmp_path / "cache")
    x = torch.from_numpy(np.array(data.images)).permute(0, 3, 1, 2).float() / 255
    labels, mask = data.labels["category"].values, data.labels["category"].mask
    y = torch.from_numpy(labels)
    idx = np.flatnonzero(mask)
    train, test = idx[:200], idx[200:]
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 3))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(10):
        for batch in np.array_split(np.random.default_rng(0).permutation(train), 7):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
    with torch.no_grad():
        accuracy = (net(x[test]).argmax(1) == y[test]).float().mean().item()
    assert accuracy > 0.6, accuracy  # chance is 1/3
