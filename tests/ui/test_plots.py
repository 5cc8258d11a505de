"""service.reports.plots: curves, confusion matrices and scatter plots are real, non-blank PNGs with the right content."""

from __future__ import annotations

import numpy as np
import pytest

from service.domain import main_metric
from service.ml.data import Labels
from service.ml.spec import parse_spec
from service.reports import plots
from tests.ui.helpers import decode_png, history


def test_curves_fixed_weighting() -> None:
    pixels = decode_png(plots.curves_png(history(5), {"strategy": "fixed"}, title="demo"))
    assert pixels.shape[1] >= 600  # total loss + two heads side by side


def test_curves_learned_weighting_adds_weight_panel() -> None:
    fixed = decode_png(plots.curves_png(history(5, tasks=("a", "b", "c"), learned=True), "fixed"))
    learned = decode_png(plots.curves_png(history(5, tasks=("a", "b", "c"), learned=True), "uncertainty"))
    # 1 total + 3 heads = 4 panels (2 rows of 3) either way, but the learned one draws a 5th panel
    assert learned.shape == fixed.shape
    assert not np.array_equal(learned, fixed)


def test_curves_without_history_is_a_message_image() -> None:
    decode_png(plots.curves_png([], "fixed", title="job x"), min_size=(300, 100))


def test_curves_tolerate_missing_values() -> None:
    h = history(3)
    h[1]["val"]["category"]["accuracy"] = None
    h[2]["val_loss"] = None
    del h[0]["val"]["size"]
    decode_png(plots.curves_png(h, "dwa"))


def test_main_metric_preference() -> None:
    assert main_metric({"loss": 1, "labelled": 3, "macro_f1": 0.2, "accuracy": 0.5}) == "accuracy"
    assert main_metric({"loss": 1, "rmse": 0.2, "mae": 0.1}) == "mae"
    assert main_metric({"loss": 1, "roc_auc": None, "accuracy": 0.7}) == "accuracy"
    assert main_metric({"loss": 1, "labelled": 2}) is None


def test_confusion_with_gate_column() -> None:
    y_true = ["a", "b", "a", plots.GATED, plots.GATED, "b", None]
    y_pred = ["a", "b", None, None, "a", "a", "b"]
    decode_png(plots.confusion_png("t", ["a", "b"], y_true, y_pred, gated=True))


def test_confusion_without_labels_is_a_message() -> None:
    decode_png(plots.confusion_png("t", ["a"], [None, None], ["a", "a"]), min_size=(300, 100))


def test_scatter_marks_gate_mistakes() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=40)
    pred = [float(v + rng.normal(scale=0.1)) for v in true]
    raw = list(pred)
    pred[3] = pred[7] = None  # suppressed although labelled
    decode_png(plots.scatter_png("size", true.tolist(), pred, raw, false_open=2))


SPEC = parse_spec({
    "tasks": [
        {"name": "category", "type": "multiclass", "classes": ["none", "circle", "square"]},
        {"name": "is_big", "type": "binary", "gate": {"task": "category", "classes": ["circle", "square"]}},
        {"name": "size", "type": "regression", "gate": {"task": "category", "classes": ["circle", "square"]}},
    ],
})


def _labels() -> dict[str, Labels]:
    cat = np.array([0, 1, 2, 1, 0, 2, 1, 0], dtype=np.int64)
    cat_mask = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    big = np.array([0, 1, 0, 1, 0, 1, 0, 0], dtype=np.float32)
    big_mask = np.array([0, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
    size = np.array([0, 3.0, 1.5, 4.0, 0, 2.0, 2.5, 0], dtype=np.float32)
    return {"category": Labels(cat, cat_mask), "is_big": Labels(big, big_mask), "size": Labels(size, big_mask)}


def test_known_negative_follows_gate_labels() -> None:
    neg = plots.known_negative(SPEC, _labels(), "size")
    assert neg.tolist() == [True, False, False, False, True, False, False, False]
    assert not plots.known_negative(SPEC, _labels(), "category").any()


def _preds() -> list[dict]:
    out = []
    for i in range(8):
        gated = i in (0, 2, 7)  # 0: right (true none), 2: gate mistake (labelled square), 7: unlabelled
        cat = {"label": "none" if gated else "circle", "probabilities": {"none": 0.5, "circle": 0.3, "square": 0.2}}
        big = {"label": None, "gated": True, "reason": "category predicted 'none'", "raw": True} if gated else \
            {"label": bool(i % 2), "probability": 0.7, "gated": False, "raw": bool(i % 2)}
        size = {"value": None, "gated": True, "reason": "category predicted 'none'", "raw": 1.0} if gated else \
            {"value": float(i), "gated": False, "raw": float(i)}
        out.append({"category": cat, "is_big": big, "size": size})
    return out


@pytest.mark.parametrize("task", ["category", "is_big", "size"])
def test_task_png_every_head_type(task: str) -> None:
    val_idx = np.arange(8)
    decode_png(plots.task_png(SPEC, _labels(), val_idx, _preds(), task, title="m v1"))


def test_task_png_on_a_subset_of_samples() -> None:
    val_idx = np.array([1, 2, 5])
    preds = [_preds()[i] for i in val_idx]
    decode_png(plots.task_png(SPEC, _labels(), val_idx, preds, "size"))
