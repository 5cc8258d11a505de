"""Trivial baselines: what a model that ignores the image scores on each head's primary validation metric.

Per head type, fitted on the TRAINING split's labelled samples and scored on the VALIDATION split with the head's
own scoring (service.ml.heads: the same code as the model's metrics), over the samples the head is trained and
scored on (own label present and gate chain not known negative, service.ml.gating):
  multiclass  majority class (ties: the first class)                      primary metric: accuracy
  binary      majority value (ties: false), as probability 0 or 1         primary metric: accuracy
  multilabel  per-tag majority (each tag present iff in > half the rows)  primary metric: micro_f1
  regression  mean predictor (the training mean, label units)             primary metric: rmse
A head type without a rule here (a plugin) gets baseline None.

`beats_baseline`: the model's value is better than the baseline's by more than MARGIN of the room the baseline
leaves (lower-is-better: value < baseline * (1 - MARGIN); higher-is-better: value > baseline + MARGIN * (1 -
baseline)). A model AT the mean predictor's error (a regression head that learned nothing) is therefore flagged,
and so is any head whose target is constant (the baseline is perfect). None when either value is missing.
"""

from __future__ import annotations

import numpy as np

from service.ml import gating
from service.ml import metrics as M

MARGIN = 0.01
KIND = {"multiclass": "majority class", "binary": "majority class", "multilabel": "per-tag majority",
        "regression": "mean predictor"}


def primary_metric(task) -> str:
    """The head's primary validation metric: the first of its type's metrics."""
    return task.head.metrics[0]


def _constant(task, y: np.ndarray) -> np.ndarray | float | None:
    """The trivial prediction (label units, the head's prediction format) fitted on training labels y."""
    if len(y) == 0:
        return None
    if task.type == "multiclass":
        return int(np.argmax(np.bincount(y.astype(np.int64), minlength=len(task.classes or []))))
    if task.type == "binary":
        return 1.0 if np.mean(y >= 0.5) > 0.5 else 0.0
    if task.type == "multilabel":
        return (np.mean(np.asarray(y) >= 0.5, axis=0) > 0.5).astype(np.float64)  # (K,)
    if task.type == "regression":
        return float(np.mean(y.astype(np.float64)))
    return None


def trivial_baselines(spec, values: dict[str, np.ndarray], masks: dict[str, np.ndarray], train_idx: np.ndarray,
                      val_idx: np.ndarray) -> dict[str, dict]:
    """{head: {"metric", "kind", "baseline": float | None}}. values: labels in label units per head; masks: each
    head's OWN label mask (gates are applied here); train_idx/val_idx: the split."""
    eff = gating.effective_masks(spec, values, masks)
    out = {}
    for t in spec.tasks:
        metric = primary_metric(t)
        v, m = np.asarray(values[t.name]), eff[t.name]
        tr, va = train_idx[m[train_idx]], val_idx[m[val_idx]]
        c = _constant(t, v[tr])
        base = None
        if c is not None and len(va):
            y = v[va]
            p = np.broadcast_to(np.asarray(c, dtype=np.float64), y.shape if t.type == "multilabel" else (len(va),))
            if t.type == "multiclass":
                p = p.astype(np.int64)
            base = t.head.scores(t, y, np.array(p)).get(metric)
        out[t.name] = {"metric": metric, "kind": KIND.get(t.type), "baseline": _num(base)}
    return out


def beats(metric: str, value: float | None, baseline: float | None) -> bool | None:
    """Does `value` beat the baseline by more than the margin (module doc)? None when either is missing."""
    if value is None or baseline is None:
        return None
    if M.higher_is_better(metric):
        return bool(value > baseline + MARGIN * (1.0 - baseline))
    return bool(value < baseline * (1.0 - MARGIN))


def head_baselines(spec, values: dict[str, np.ndarray], masks: dict[str, np.ndarray], train_idx: np.ndarray,
                   val_idx: np.ndarray, scores: dict[str, dict]) -> dict[str, dict]:
    """Each head's primary validation metric beside its trivial baseline:
    {head: {"metric", "kind", "value", "baseline", "beats_baseline"}}. scores: {head: {metric: value}} on
    val_idx (service.ml.metrics.evaluate or the trainer's best-epoch validation metrics)."""
    out = {}
    for name, b in trivial_baselines(spec, values, masks, train_idx, val_idx).items():
        value = _num((scores.get(name) or {}).get(b["metric"]))
        out[name] = {**b, "value": value, "beats_baseline": beats(b["metric"], value, b["baseline"])}
    return out


def _num(v) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None
