"""service.reports.plots: what is drawn, checked on the pixels. Panels are located by the colours matplotlib
draws them with (tab:blue/orange/green lines, the Blues colormap, red gate-mistake marks), so each test fails
when a line, a panel, a cell's shade or a mark is missing or in the wrong place."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.domain import main_metric
from service.ml.data import Labels
from service.ml.spec import parse_spec
from service.reports import plots
from tests.ui.helpers import decode_png, history

BLUE, ORANGE, GREEN, RED = (31, 119, 180), (255, 127, 14), (44, 160, 44), (255, 0, 0)


def rgb(png: bytes) -> np.ndarray:
    decode_png(png, min_size=(100, 100))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def near(pixels: np.ndarray, colour: tuple[int, int, int], tol: int = 30) -> np.ndarray:
    return np.abs(pixels - np.array(colour)).sum(axis=2) < tol


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for i, v in enumerate(list(mask) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


def cell_shades(png: bytes, n: int) -> np.ndarray:
    """The confusion matrix's n x n cells as darkness 0..1 (sampled off-centre, away from the count text)."""
    px = rgb(png)
    bluish = (px[:, :, 2] > px[:, :, 0]) & (px[:, :, 2] >= 200 - 150)  # every Blues shade, not white or black
    bluish &= px.sum(axis=2) < 3 * 255
    col_runs = runs(bluish.sum(axis=0) > 5)
    x0, x1 = max(col_runs, key=lambda r: r[1] - r[0])  # the matrix; the colorbar is the narrow run
    row_runs = runs(bluish[:, x0:x1].sum(axis=1) > 5)
    y0, y1 = max(row_runs, key=lambda r: r[1] - r[0])
    cw, ch = (x1 - x0) / n, (y1 - y0) / n
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            patch = px[int(y0 + (i + 0.15) * ch):int(y0 + (i + 0.3) * ch), int(x0 + (j + 0.15) * cw):int(x0 + (j + 0.3) * cw)]
            out[i, j] = 1 - patch[:, :, 0].mean() / 247  # Blues: red channel 247 (empty) .. 8 (full)
    return out


def thirds(mask: np.ndarray) -> list[int]:
    w = mask.shape[1] // 3
    return [int(mask[:, k * w:(k + 1) * w].sum()) for k in range(3)]


def test_curves_fixed_weighting_panels_and_lines() -> None:
    px = rgb(plots.curves_png(history(5), {"strategy": "fixed"}, title="demo"))
    assert px.shape == (340, 1380, 3)  # total + two heads, one row of 4.6 x 3.4 inch panels at 100 dpi
    total, category, size = thirds(near(px, GREEN))
    assert total == 0 and category > 100 and size > 100  # the main metric line is drawn in each head panel only
    assert all(n > 100 for n in thirds(near(px, ORANGE)))  # val loss in every panel (C1 in the total panel)


def test_curves_learned_weighting_adds_weight_panel() -> None:
    h = history(5, tasks=("a", "b", "c"), learned=True)
    fixed, learned = rgb(plots.curves_png(h, "fixed")), rgb(plots.curves_png(h, "uncertainty"))
    assert fixed.shape == learned.shape == (680, 1380, 3)  # 2 rows of 3 either way
    cell = (slice(340, 680), slice(460, 920))  # row 2, column 2: the task-weight panel when learned
    coloured = lambda px: int((near(px, BLUE) | near(px, ORANGE) | near(px, GREEN))[cell].sum())  # noqa: E731
    assert coloured(fixed) == 0 and coloured(learned) > 300
    assert int((fixed[340:, 920:] < 250).sum()) == 0  # the unused sixth cell stays blank


def test_curves_without_history_is_a_message_image() -> None:
    px = rgb(plots.curves_png([], "fixed", title="job x"))
    assert px.shape == (300, 600, 3)
    text = near(px, (68, 68, 68), tol=60)
    assert 50 < text.sum() < 0.1 * px.shape[0] * px.shape[1]  # a line of text, no plot
    assert not (near(px, BLUE) | near(px, ORANGE) | near(px, GREEN)).any()


def test_curves_tolerate_missing_values() -> None:
    h = history(3)
    h[1]["val"]["category"]["accuracy"] = None
    h[2]["val_loss"] = None
    del h[0]["val"]["size"]
    px = rgb(plots.curves_png(h, "dwa"))
    total, category, size = thirds(near(px, GREEN))
    assert category > 20 and size > 20  # the gaps leave the rest of each line drawn


def test_main_metric_preference() -> None:
    assert main_metric({"loss": 1, "labelled": 3, "macro_f1": 0.2, "accuracy": 0.5}) == "accuracy"
    assert main_metric({"loss": 1, "rmse": 0.2, "mae": 0.1}) == "mae"
    assert main_metric({"loss": 1, "roc_auc": None, "accuracy": 0.7}) == "accuracy"
    assert main_metric({"loss": 1, "labelled": 2}) is None


def test_confusion_shades_follow_the_matrix() -> None:
    classes = ["a", "b", "c"]
    right = cell_shades(plots.confusion_png("t", classes, classes * 4, classes * 4), 3)
    assert (np.diag(right) > 0.8).all() and (right[~np.eye(3, dtype=bool)] < 0.1).all()
    all_a = cell_shades(plots.confusion_png("t", classes, classes * 4, ["a"] * 12), 3)
    assert (all_a[:, 0] > 0.8).all() and (all_a[:, 1:] < 0.1).all()
    half = cell_shades(plots.confusion_png("t", classes, ["a"] * 4, ["a", "a", "b", "b"]), 3)
    assert 0.3 < half[0, 0] < 0.7 and abs(half[0, 0] - half[0, 1]) < 0.1 and (half[1:] < 0.1).all()


def test_confusion_outlines_gate_mistakes_in_red() -> None:
    y_true = ["a", "b", "a", plots.GATED, plots.GATED, "b", None]
    y_pred = ["a", "b", None, None, "a", "a", "b"]
    with_mistakes = rgb(plots.confusion_png("t", ["a", "b"], y_true, y_pred, gated=True))
    red = near(with_mistakes, RED, tol=60)
    assert red.sum() > 100
    clean = rgb(plots.confusion_png("t", ["a", "b"], ["a", "b", plots.GATED], ["a", "b", None], gated=True))
    assert near(clean, RED, tol=60).sum() == 0


def test_confusion_without_labels_is_a_message() -> None:
    px = rgb(plots.confusion_png("t", ["a"], [None, None], ["a", "a"]))
    assert px.shape == (300, 600, 3) and not near(px, (8, 48, 107), tol=60).any()


def test_scatter_marks_gate_mistakes() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=40)
    pred = [float(v + rng.normal(scale=0.1)) for v in true]
    raw = list(pred)
    clean = rgb(plots.scatter_png("size", true.tolist(), pred, raw))
    pred[3] = pred[7] = None  # suppressed although labelled
    marked = rgb(plots.scatter_png("size", true.tolist(), pred, raw, false_open=2))
    assert near(clean, BLUE, tol=80).sum() > 200 and near(clean, RED, tol=60).sum() == 0
    assert near(marked, RED, tol=60).sum() > 20  # two red x marks (and the legend's)


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


@pytest.mark.parametrize(("task", "kind"), [("category", "matrix"), ("is_big", "matrix+red"), ("size", "scatter+red")])
def test_task_png_every_head_type(task: str, kind: str) -> None:
    px = rgb(plots.task_png(SPEC, _labels(), np.arange(8), _preds(), task, title="m v1"))
    matrix = near(px, (8, 48, 107), tol=60).sum() > 50  # the colorbar's darkest Blues shade: a confusion matrix
    assert matrix == kind.startswith("matrix")
    # sample 2 is a labelled square that the predicted gate suppressed: a gate mistake for the gated heads
    assert (near(px, RED, tol=60).sum() > 20) == kind.endswith("red")


def test_task_png_on_a_subset_of_samples() -> None:
    val_idx = np.array([1, 5])  # no gate mistake among these
    preds = [_preds()[i] for i in val_idx]
    px = rgb(plots.task_png(SPEC, _labels(), val_idx, preds, "size"))
    assert near(px, BLUE, tol=80).sum() > 20 and near(px, RED, tol=60).sum() == 0
