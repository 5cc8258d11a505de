"""Metrics: exact values on tiny arrays, and the two views of a gated head."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from service.ml import metrics as M
from service.ml.spec import parse_spec


def test_accuracy_and_macro_f1_exact():
    y = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 2, 2, 0])
    assert M.accuracy(y, p) == pytest.approx(4 / 6)
    # class 0: tp1 t2 p2 -> 0.5; class 1: tp1 t1 p2 -> 2/3; class 2: tp2 t3 p2 -> 0.8
    assert M.macro_f1(y, p) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert M.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    assert M.accuracy(np.array([]), np.array([])) is None


def test_roc_auc_exact_with_ties_and_one_class():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert M.roc_auc(y, s) == pytest.approx(0.75)
    s_tied = np.array([0.5, 0.2, 0.5, 0.9])
    assert M.roc_auc(y, s_tied) == pytest.approx(roc_auc_score(y, s_tied)) == pytest.approx(0.875)
    assert M.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_rmse_mae_exact():
    assert M.rmse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 0.0])) == pytest.approx(math.sqrt(13 / 3))
    assert M.mae(np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 0.0])) == pytest.approx(5 / 3)


def gated_spec():
    return parse_spec(
        {
            "tasks": [
                {"name": "category", "type": "multiclass", "classes": ["none", "circle", "square"]},
                {
                    "name": "is_big",
                    "type": "binary",
                    "gate": {"task": "category", "classes": ["circle", "square"]},
                },
                {"name": "size", "type": "regression", "gate": {"task": "is_big"}},
            ]
        }
    )


def test_evaluate_gated_heads_given_true_gate_and_end_to_end():
    spec = gated_spec()
    # 5 samples. true category: none, circle, square, circle, none
    cat_y = np.array([0, 1, 2, 1, 0])
    cat_logits = np.array([[5, 0, 0], [0, 5, 0], [5, 0, 0], [0, 5, 0], [0, 5, 0]], float)  # pred: n c n c c
    big_y = np.array([0, 1, 1, 0, 0], np.float32)
    big_mask = np.array([False, True, True, True, False])
    big_logit = np.array([0.0, 2.0, 2.0, 2.0, -2.0])  # pred prob: .5 .88 .88 .88 .12
    size_y = np.array([0, 3.0, 5.0, 0, 0], np.float32)
    size_mask = np.array([False, True, True, False, False])
    size_out = np.array([9.0, 1.0, 2.0, 0.0, 0.0])  # standardised; mean 1, std 2 -> 19, 3, 5, 1, 1
    norm = {"size": {"mean": 1.0, "std": 2.0}}
    res = M.evaluate(
        spec,
        {"category": cat_logits, "is_big": big_logit, "size": size_out},
        {"category": cat_y, "is_big": big_y, "size": size_y},
        {"category": np.ones(5, bool), "is_big": big_mask, "size": size_mask},
        norm,
    )
    assert res["category"]["accuracy"] == pytest.approx(3 / 5)
    big = res["is_big"]  # scored on samples 1, 2, 3 (labelled, category not none)
    assert big["labelled"] == 3 and big["accuracy"] == pytest.approx(2 / 3)
    assert big["gate_miss_rate"] == pytest.approx(1 / 3)  # sample 2: category predicted none
    assert big["e2e_accuracy"] == pytest.approx(1 / 3)  # only sample 1 right with gate open
    assert big["gate_false_alarm_rate"] == pytest.approx(0.5)  # samples 0, 4 truly none; 4 predicted circle
    size = res["size"]  # labelled 1, 2; predictions 3.0, 5.0 exact
    assert size["labelled"] == 2 and size["rmse"] == pytest.approx(0.0) and size["mae"] == pytest.approx(0.0)
    assert size["gate_miss_rate"] == pytest.approx(
        0.5
    )  # sample 2's chain is closed (category predicted none)
    assert size["e2e_rmse"] == pytest.approx(0.0)
    # gate known negative for size: is_big labelled false (3) or category none (0, 4); predicted chain open at 3
    assert size["gate_false_alarm_rate"] == pytest.approx(1 / 3)


def test_metric_names_and_direction():
    spec = gated_spec()
    assert "e2e_rmse" in M.metric_names(spec, "size") and "e2e_rmse" not in M.metric_names(spec, "category")
    assert M.higher_is_better("category.accuracy") and not M.higher_is_better("size.rmse")
    assert not M.higher_is_better("val_loss")
