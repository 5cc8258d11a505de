"""Validation metrics per head, in numpy, including the two views of a gated head.

Definitions (all over validation samples):
- multiclass: "accuracy", "macro_f1" (unweighted mean F1 over the classes present in the truth or the predictions,
  as scikit-learn's ``f1_score(average="macro")``).
- binary: "accuracy" (probability >= 0.5 is true), "roc_auc" (rank statistic, ties count half; None when only
  one class is present).
- regression: "rmse", "mae" in the original label units (predictions de-standardised).
- every head: "labelled" = number of samples scored (own label present and gate not known negative).

A gated head T is scored twice:
- given the true gate: the plain keys above, over T's labelled samples whose gate is not known negative
  (a labelled gated sample implies its gate applies), i.e. exactly the samples T is trained on;
- end to end, over the same samples, letting the *predicted* gate chain decide. A sample whose predicted chain is
  negative gets no prediction from the service: "gate_miss_rate" = fraction of those samples;
  classification: "e2e_accuracy" counts a gate miss as wrong; regression: "e2e_rmse"/"e2e_mae" are over the
  samples whose predicted gate is positive (gate misses excluded from the error but reported by the miss rate).
  "gate_false_alarm_rate" = over samples whose gate is known negative, the fraction where the predicted chain
  is positive (the service would emit a value where none applies); None when there are no such samples.
"""

from __future__ import annotations

import math

import numpy as np

from service.ml.spec import Spec

LOWER_IS_BETTER = {"loss", "rmse", "mae", "e2e_rmse", "e2e_mae", "gate_miss_rate", "gate_false_alarm_rate"}
_BASE = {
    "multiclass": ["accuracy", "macro_f1"],
    "binary": ["accuracy", "roc_auc"],
    "regression": ["rmse", "mae"],
}
_GATED = {"multiclass": ["e2e_accuracy"], "binary": ["e2e_accuracy"], "regression": ["e2e_rmse", "e2e_mae"]}


def metric_names(spec: Spec, task: str) -> list[str]:
    """Metric keys reported for `task` (usable in early_stopping.metric as "<task>.<key>")."""
    t = spec.task(task)
    names = ["loss", *_BASE[t.type]]
    if t.gate is not None:
        names += [*_GATED[t.type], "gate_miss_rate", "gate_false_alarm_rate"]
    return names


def higher_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] not in LOWER_IS_BETTER and metric != "val_loss"


# ---------------------------------------------------------------- primitives
def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(y_true) == 0:
        return None
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return None
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = np.sum((y_true == c) & (y_pred == c))
        denom = np.sum(y_true == c) + np.sum(y_pred == c)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic (average ranks for ties)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    start = 0
    while start < len(s):  # average rank over runs of equal scores
        end = start
        while end + 1 < len(s) and sorted_s[end + 1] == sorted_s[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(y_true) == 0:
        return None
    d = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    return float(math.sqrt(np.mean(d * d)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(y_true) == 0:
        return None
    return float(np.mean(np.abs(np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64))))


# ---------------------------------------------------------------- gating
def _positive(spec: Spec, gate_task: str, classes: list[str] | None, values: np.ndarray) -> np.ndarray:
    """Whether a gate task's value (label index / 0-1 label / probability) is positive."""
    g = spec.task(gate_task)
    if g.type == "binary":
        return np.asarray(values, dtype=np.float64) >= 0.5
    idx = [g.classes.index(c) for c in classes or []]
    return np.isin(np.asarray(values).astype(np.int64), idx)


def known_negative(
    spec: Spec, task: str, values: dict[str, np.ndarray], masks: dict[str, np.ndarray]
) -> np.ndarray:
    """True where `task`'s gate chain is known negative from labels (gate labelled and not positive, or the gate
    task itself gated and known negative). All False for an ungated task."""
    t = spec.task(task)
    n = len(masks[task])
    if t.gate is None:
        return np.zeros(n, dtype=bool)
    g = t.gate.task
    neg = masks[g].astype(bool) & ~_positive(spec, g, t.gate.classes, values[g])
    return neg | known_negative(spec, g, values, masks)


def effective_masks(
    spec: Spec, values: dict[str, np.ndarray], masks: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per task: own label present and gate chain not known negative (the samples a head is trained on)."""
    return {t: masks[t].astype(bool) & ~known_negative(spec, t, values, masks) for t in spec.task_names}


def predicted_gate(spec: Spec, task: str, predictions: dict[str, np.ndarray]) -> np.ndarray:
    """True where the predicted gate chain of `task` is positive (all True for an ungated task).
    predictions: multiclass -> class index, binary -> probability."""
    t = spec.task(task)
    n = len(next(iter(predictions.values())))
    if t.gate is None:
        return np.ones(n, dtype=bool)
    g = t.gate.task
    return _positive(spec, g, t.gate.classes, predictions[g]) & predicted_gate(spec, g, predictions)


# ---------------------------------------------------------------- per-head evaluation
def predictions_from_outputs(
    spec: Spec, outputs: dict[str, np.ndarray], normalization: dict[str, dict]
) -> dict[str, np.ndarray]:
    """Network outputs -> class index (multiclass) / probability (binary) / value in label units (regression)."""
    preds = {}
    for t in spec.tasks:
        out = np.asarray(outputs[t.name], dtype=np.float64)
        if t.type == "multiclass":
            preds[t.name] = out.argmax(axis=1)
        elif t.type == "binary":
            preds[t.name] = 1.0 / (1.0 + np.exp(-out))
        else:
            norm = normalization.get(t.name, {"mean": 0.0, "std": 1.0})
            preds[t.name] = out * norm["std"] + norm["mean"]
    return preds


def _scores(kind: str, y: np.ndarray, p: np.ndarray) -> dict:
    if kind == "multiclass":
        return {"accuracy": accuracy(y, p), "macro_f1": macro_f1(y, p)}
    if kind == "binary":
        return {"accuracy": accuracy(y >= 0.5, p >= 0.5), "roc_auc": roc_auc(y >= 0.5, p)}
    return {"rmse": rmse(y, p), "mae": mae(y, p)}


def evaluate(
    spec: Spec,
    outputs: dict[str, np.ndarray],
    values: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    normalization: dict[str, dict],
) -> dict[str, dict]:
    """Metrics per head. values: labels in label units (class index, 0/1, raw regression value); masks: own
    label present (gating is applied here). Returns {task: {"labelled": n, <metric>: float | None}}."""
    preds = predictions_from_outputs(spec, outputs, normalization)
    eff = effective_masks(spec, values, masks)
    result: dict[str, dict] = {}
    for t in spec.tasks:
        m = eff[t.name]
        y, p = np.asarray(values[t.name])[m], preds[t.name][m]
        r: dict = {"labelled": int(m.sum()), **_scores(t.type, y, p)}
        if t.gate is not None:
            on = predicted_gate(spec, t.name, preds)
            hit = on[m]
            r["gate_miss_rate"] = float(1.0 - hit.mean()) if len(hit) else None
            if t.type == "regression":
                r["e2e_rmse"], r["e2e_mae"] = rmse(y[hit], p[hit]), mae(y[hit], p[hit])
            else:
                right = (y == p) if t.type == "multiclass" else ((y >= 0.5) == (p >= 0.5))
                r["e2e_accuracy"] = float(np.mean(right & hit)) if len(hit) else None
            neg = known_negative(spec, t.name, values, masks)
            r["gate_false_alarm_rate"] = float(on[neg].mean()) if neg.any() else None
        result[t.name] = r
    return result
