"""Validation metrics per head, in numpy, including the two views of a gated head.

Per head type (service.ml.heads): multiclass "accuracy", "macro_f1"; binary "accuracy" (p >= 0.5), "roc_auc";
regression "rmse", "mae" in label units; multilabel "micro_f1", "macro_f1" (at the task's threshold),
"mean_average_precision". Every head: "labelled" = samples scored (own label and gate not known negative).

A gated head is scored twice: given the true gate (the keys above, over exactly the samples it is trained on) and
end to end, letting the *predicted* gate chain decide (service.ml.gating): "gate_miss_rate", classification
"e2e_accuracy" (a gate miss counts as wrong), regression "e2e_rmse"/"e2e_mae" (over samples whose predicted gate
is open), and "gate_false_alarm_rate" over samples whose gate is known negative (None when there are none).
"""

from __future__ import annotations

import numpy as np

from service.ml import gating
from service.ml.gating import effective_masks, known_negative  # noqa: F401  (public re-exports)
from service.ml.scores import accuracy, macro_f1, mae, rmse, roc_auc  # noqa: F401
from service.ml.spec import Spec

LOWER_IS_BETTER = {"loss", "rmse", "mae", "e2e_rmse", "e2e_mae", "gate_miss_rate", "gate_false_alarm_rate"}


def metric_names(spec: Spec, task: str) -> list[str]:
    """Metric keys reported for `task` (usable in early_stopping.metric as "<task>.<key>")."""
    t = spec.task(task)
    names = ["loss", *t.head.metrics]
    if t.gate is not None:
        names += [*t.head.gated_metrics, "gate_miss_rate", "gate_false_alarm_rate"]
    return names


def higher_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] not in LOWER_IS_BETTER and metric != "val_loss"


def predictions_from_outputs(spec: Spec, outputs: dict[str, np.ndarray], normalization: dict[str, dict]
                             ) -> dict[str, np.ndarray]:
    """Network outputs -> predictions in label units (class index, probability, value, tag probabilities)."""
    return {t.name: t.head.predictions(t, outputs[t.name], normalization.get(t.name)) for t in spec.tasks}


def evaluate(
    spec: Spec,
    outputs: dict[str, np.ndarray],
    values: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    normalization: dict[str, dict],
) -> dict[str, dict]:
    """Metrics per head. values: labels in label units; masks: own label present (gating is applied here).
    Returns {task: {"labelled": n, <metric>: float | None}}."""
    preds = predictions_from_outputs(spec, outputs, normalization)
    neg = gating.known_negative(spec, values, masks)
    gates = gating.predicted_gates(spec, preds) if any(t.gate for t in spec.tasks) else {}
    result: dict[str, dict] = {}
    for t in spec.tasks:
        m = np.asarray(masks[t.name], dtype=bool) & ~neg[t.name]
        y, p = np.asarray(values[t.name])[m], preds[t.name][m]
        r: dict = {"labelled": int(m.sum()), **t.head.scores(t, y, p)}
        if t.gate is not None:
            on = gates[t.name][0]
            r.update(gating.gate_metrics(t, y, p, on[m], on[neg[t.name]]))
        result[t.name] = r
    return result


class StreamingEvaluation:
    """`evaluate` over a dataset seen a batch at a time, with the same result (bit for bit): each batch is reduced
    at once to what the metrics need per scored sample -- the label, the prediction in label units (class index,
    probability, value, tag probabilities) and the predicted-gate flags -- and the network outputs are dropped.
    Memory is then a few numbers per labelled sample and head (ranking metrics such as roc_auc need every score)
    instead of the whole output tensors."""

    def __init__(self, spec: Spec, normalization: dict[str, dict]):
        self.spec, self.normalization = spec, normalization
        self.gated = any(t.gate for t in spec.tasks)
        self.parts: dict[str, dict[str, list[np.ndarray]]] = {
            t.name: {"y": [], "p": [], "hit": [], "false_alarm": []} for t in spec.tasks}

    def add(self, outputs: dict[str, np.ndarray], values: dict[str, np.ndarray], masks: dict[str, np.ndarray]
            ) -> None:
        """One batch: network outputs and the batch's labels/masks (gating applied here, per sample)."""
        preds = predictions_from_outputs(self.spec, outputs, self.normalization)
        neg = gating.known_negative(self.spec, values, masks)
        gates = gating.predicted_gates(self.spec, preds) if self.gated else {}
        for t in self.spec.tasks:
            m = np.asarray(masks[t.name], dtype=bool) & ~neg[t.name]
            part = self.parts[t.name]
            part["y"].append(np.asarray(values[t.name])[m])
            part["p"].append(preds[t.name][m])
            if t.gate is not None:
                on = gates[t.name][0]
                part["hit"].append(on[m])
                part["false_alarm"].append(on[neg[t.name]])

    def result(self) -> dict[str, dict]:
        """{task: {"labelled": n, <metric>: float | None}}, as `evaluate` over every batch at once."""
        result: dict[str, dict] = {}
        for t in self.spec.tasks:
            part = {k: _join(v) for k, v in self.parts[t.name].items()}
            y, p = part["y"], part["p"]
            r: dict = {"labelled": len(y), **t.head.scores(t, y, p)}
            if t.gate is not None:
                r.update(gating.gate_metrics(t, y, p, part["hit"], part["false_alarm"]))
            result[t.name] = r
        return result


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)
