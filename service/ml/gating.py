"""THE gate semantics. A task with `gate: {task: g, classes?}` applies only where g is positive (binary g: true;
multiclass g: its class is one of `classes`; multilabel g: any of `classes` present), recursively along chains.

Everything here is numpy over whole arrays; "values" are per-task labels or predictions in label units (class
index, 0/1 or probability, tag 0/1 or probabilities: see the head types). Used by training (effective masks),
metrics (gate metrics), inference (predicted gate + reason), the audit and the plots.
"""

from __future__ import annotations

import numpy as np


def gate_positive(spec, task: str, values: dict[str, np.ndarray]) -> np.ndarray:
    """Bool (N,): the gate head of `task` is positive for its gate classes (labels or predictions)."""
    gate = spec.task(task).gate
    g = spec.task(gate.task)
    return g.head.positive(g, gate.classes, values[g.name])


def known_negative(spec, values: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Bool (N,) per task: its gate chain is known negative from labels (gate labelled and not positive, or the
    gate task itself known negative). All False for an ungated task."""
    neg: dict[str, np.ndarray] = {}
    for name in spec.gate_order():
        gate = spec.task(name).gate
        n = len(masks[name])
        if gate is None:
            neg[name] = np.zeros(n, dtype=bool)
            continue
        labelled = np.asarray(masks[gate.task], dtype=bool)
        neg[name] = (labelled & ~gate_positive(spec, name, values)) | neg[gate.task]
    return neg


def effective_masks(spec, values: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per task: own label present and gate chain not known negative (the samples a head is trained on)."""
    neg = known_negative(spec, values, masks)
    return {t: np.asarray(masks[t], dtype=bool) & ~neg[t] for t in spec.task_names}


def predicted_gates(spec, predictions: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, list]]:
    """Per task: (open (N,) bool: the predicted gate chain is positive, reason per sample: None when open, else
    the reason naming the first closed gate along the chain, e.g. "category predicted 'none'")."""
    n = len(next(iter(predictions.values())))
    out: dict[str, tuple[np.ndarray, list]] = {}
    for name in spec.gate_order():
        gate = spec.task(name).gate
        if gate is None:
            out[name] = (np.ones(n, dtype=bool), [None] * n)
            continue
        up_open, up_reason = out[gate.task]
        g = spec.task(gate.task)
        own = g.head.positive(g, gate.classes, predictions[g.name])
        reasons = [up_reason[i] if not up_open[i] else
                   None if own[i] else g.head.gate_reason(g, gate.classes, predictions[g.name][i])
                   for i in range(n)]
        out[name] = (up_open & own, reasons)
    return out


def gate_metrics(task, y: np.ndarray, p: np.ndarray, hit: np.ndarray, false_alarm: np.ndarray) -> dict:
    """Metrics of a gated head over its scored samples: y/p labels and predictions, hit = predicted gate open
    there; false_alarm = predicted gate open where the gate is known negative."""
    r = {"gate_miss_rate": float(1.0 - hit.mean()) if len(hit) else None,
         **task.head.e2e_scores(task, y, p, hit)}
    r["gate_false_alarm_rate"] = float(false_alarm.mean()) if len(false_alarm) else None
    return r
