"""binary: true/false per sample; one logit; label = 0/1 (float32); prediction = probability."""

from __future__ import annotations

import numpy as np

from service.ml import scores as S
from service.ml.heads import register_head
from service.ml.heads.base import HeadType, show


@register_head
class Binary(HeadType):
    name = "binary"
    default_loss = "binary_cross_entropy"
    metrics = ("accuracy", "roc_auc")
    label_kind = "boolean"

    def check_gate(self, gate_classes, gate_task, path: str) -> list[str]:
        if gate_classes is not None:
            return [f"{path}.classes: not allowed for binary gate task '{gate_task.name}' (positive means true); "
                    "remove it"]
        return []

    def label_map(self, task) -> dict:
        return {"type": self.name, "classes": [False, True]}

    def encode(self, task, values, table, strict=True):
        from service.ml.data import Labels
        from service.ml.data.archive import DataError
        from service.ml.data.table import as_bool

        out = np.zeros(len(values), dtype=np.float32)
        mask = np.zeros(len(values), dtype=bool)
        for j, v in enumerate(values):
            if v is None:
                continue
            b = as_bool(v)
            if b is None:
                if strict:
                    raise DataError(f"{table.where(j, task.source)}: {show(v)} is not a boolean; "
                                    "expected true/false/1/0/yes/no")
                continue
            out[j], mask[j] = (1.0 if b else 0.0), True
        return Labels(out, mask)

    def audit(self, task, values, table, label_errors):
        from service.ml.data.table import as_bool

        counts, invalid = {"false": 0, "true": 0}, 0
        for j, v in enumerate(values):
            if v is None:
                continue
            b = as_bool(v)
            if b is None:
                invalid += 1
                if len(label_errors) < 20:
                    label_errors.append(f"{table.where(j, task.source)}: {show(v)} is not a valid boolean")
                continue
            counts["true" if b else "false"] += 1
        return {"class_counts": counts, "invalid": invalid}

    def predictions(self, task, out, norm):
        return 1.0 / (1.0 + np.exp(-np.asarray(out, dtype=np.float64)))

    def decode(self, task, preds, out):
        return [{"label": bool(v >= 0.5), "probability": float(v)} for v in preds]

    def positive(self, task, gate_classes, values):
        return np.asarray(values, dtype=np.float64) >= 0.5

    def gate_reason(self, task, gate_classes, pred) -> str:
        return f"{task.name} predicted false"

    def scores(self, task, y, p):
        return {"accuracy": S.accuracy(y >= 0.5, p >= 0.5), "roc_auc": S.roc_auc(y >= 0.5, p)}

    def correct(self, task, y, p):
        return (np.asarray(y) >= 0.5) == (np.asarray(p) >= 0.5)
