"""Trivial baselines: exact values on hand-made masked and gated data, the margin rule, and the flag after real
training when a head cannot beat its baseline (a constant regression target)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.ml.baselines import beats, head_baselines, trivial_baselines
from service.ml.spec import parse_spec

TRAIN, VAL = np.arange(6), np.arange(6, 10)


def hand_made():
    spec = parse_spec({
        "tasks": [
            {"name": "cat", "type": "multiclass", "classes": ["a", "b", "c"]},
            {"name": "flag", "type": "binary"},
            {"name": "size", "type": "regression", "gate": {"task": "flag"}},
            {"name": "tags", "type": "multilabel", "classes": ["x", "y"]},
        ],
        "model": {"image_size": 16, "channels": 1},
    })
    t, f = True, False
    values = {
        "cat": np.array([0, 1, 1, 2, 1, 0, 1, 0, 1, 2]),
        "flag": np.array([1, 1, 0, 0, 0, 1, 0, 1, 1, 1], dtype=np.float32),
        "size": np.array([2, 4, 6, 8, 10, 12, 100, 9, 5, 8], dtype=np.float32),
        "tags": np.array([[1, 0], [1, 1], [1, 0], [0, 1], [0, 0], [1, 1], [1, 0], [0, 1], [1, 1], [0, 0]],
                         dtype=np.float32),
    }
    masks = {
        # unmasked, "b" would be the majority (3 of 6); masked, "a" is (2 of 4)
        "cat": np.array([t, f, t, t, f, t, t, t, t, t]),
        # unmasked a 3:3 tie (-> false); masked 3 true of 4 -> true; the 4th val row is not scored
        "flag": np.array([t, t, t, f, f, t, t, t, t, f]),
        "size": np.ones(10, bool),
        "tags": np.array([t, t, t, t, t, f, t, t, t, t]),
    }
    return spec, values, masks


def test_exact_baselines_respect_masks_and_gates():
    spec, values, masks = hand_made()
    b = trivial_baselines(spec, values, masks, TRAIN, VAL)
    assert {k: (v["metric"], v["kind"]) for k, v in b.items()} == {
        "cat": ("accuracy", "majority class"), "flag": ("accuracy", "majority class"),
        "size": ("rmse", "mean predictor"), "tags": ("micro_f1", "per-tag majority")}
    assert b["cat"]["baseline"] == pytest.approx(1 / 4)  # predicts "a": right on val row 7 only
    assert b["flag"]["baseline"] == pytest.approx(2 / 3)  # predicts true on rows 6, 7, 8 (9 unlabelled)
    # size: train row 2 is gated off (flag labelled false) -> mean of 2, 4, 8, 10, 12 = 7.2 (rows 3, 4 have an
    # unknown gate: kept); val row 6 is gated off (its 100 is not scored) -> errors on 9, 5, 8
    assert b["size"]["baseline"] == pytest.approx(math.sqrt((1.8**2 + 2.2**2 + 0.8**2) / 3))
    # tags: x in 3 of 5 labelled train rows (present), y in 2 of 5 (absent) -> predict [1, 0]:
    # tp 2, fp 2, fn 2 -> micro F1 = 4 / 8
    assert b["tags"]["baseline"] == pytest.approx(0.5)


def test_no_labels_no_baseline():
    spec, values, masks = hand_made()
    masks["cat"][VAL] = False
    masks["size"][TRAIN] = False
    b = trivial_baselines(spec, values, masks, TRAIN, VAL)
    assert b["cat"]["baseline"] is None and b["size"]["baseline"] is None


def test_margin_rule():
    assert beats("accuracy", 0.80, 0.50) is True
    assert beats("accuracy", 0.504, 0.50) is False  # within 1% of the room above the baseline
    assert beats("accuracy", 1.0, 1.0) is False  # a constant class: nothing to beat
    assert beats("rmse", 0.5, 1.0) is True
    assert beats("rmse", 0.995, 1.0) is False  # at the mean predictor's error
    assert beats("rmse", 0.0, 0.0) is False  # a constant target: the mean predictor is perfect
    assert beats("rmse", None, 1.0) is None and beats("accuracy", 0.9, None) is None


def test_head_baselines_judges_the_models_value():
    spec, values, masks = hand_made()
    scores = {"cat": {"accuracy": 1.0}, "flag": {"accuracy": 0.6}, "size": {"rmse": 0.5},
              "tags": {"micro_f1": None}}
    out = head_baselines(spec, values, masks, TRAIN, VAL, scores)
    assert {k: v["beats_baseline"] for k, v in out.items()} == {"cat": True, "flag": False, "size": True,
                                                               "tags": None}
    assert out["size"]["value"] == 0.5 and set(out["size"]) == {"metric", "kind", "value", "baseline",
                                                                "beats_baseline"}


def test_training_flags_a_head_that_cannot_beat_its_baseline():
    """A regression head with a constant target: the mean predictor is exact, the model is flagged; the
    learnable classification head beats its majority class."""
    torch = pytest.importorskip("torch")
    from service.ml.data import Labels, TrainingData
    from service.ml.train import train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 48
    cls = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
    images[cls == 1] += 150  # class 1 is bright: trivially learnable
    data = TrainingData(images=images, labels={
        "bright": Labels(cls.astype(np.int64), np.ones(n, bool)),
        "const": Labels(np.full(n, 3.0, np.float32), np.ones(n, bool)),
    })
    spec = parse_spec({
        "tasks": [{"name": "bright", "type": "multiclass", "classes": ["dark", "bright"]},
                  {"name": "const", "type": "regression"}],
        "model": {"image_size": 8, "channels": 1, "width": 4, "depth": 1, "head_hidden": 4},
        "training": {"epochs": 4, "batch_size": 16, "val_fraction": 0.25, "seed": 0, "learning_rate": 0.01},
    })
    b = train(spec, data, device="cpu").metrics["baselines"]
    assert b["const"]["baseline"] == 0.0 and b["const"]["beats_baseline"] is False
    assert b["bright"]["kind"] == "majority class" and b["bright"]["baseline"] < 0.75
    assert b["bright"]["value"] == 1.0 and b["bright"]["beats_baseline"] is True
