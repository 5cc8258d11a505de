"""multilabel: a set of tags per sample (one sigmoid per tag). Cells: CSV `cat|outdoor`, JSONL `["cat", "outdoor"]`;
an empty cell / null = missing; "labelled, no tag" is `[]` (the literal `[]` in CSV). Label = (K,) 0/1 float32.
Prediction = tag probabilities; a tag is predicted when p >= `threshold` (default 0.5, per task). As a gate it is
positive when any of the gate's `classes` is predicted (labels: present)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from service.ml import scores as S
from service.ml.heads import register_head
from service.ml.heads.base import HeadType, check_classes, show
from service.ml.heads.multiclass import check_gate_classes, unknown_class_errors
from service.ml.strict import StrictModel

SEPARATOR = "|"
EMPTY = "[]"


class MultilabelFields(StrictModel):
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


def tags(v) -> list[str] | None:
    """A raw cell -> its tags ([] = labelled, no tag), or None when it is not a tag set."""
    if isinstance(v, tuple | list):
        return [str(t).strip() for t in v if str(t).strip()] if all(isinstance(t, str) for t in v) else None
    if isinstance(v, str):
        text = v.strip()
        return [] if text == EMPTY else [t.strip() for t in text.split(SEPARATOR) if t.strip()]
    return None


@register_head
class Multilabel(HeadType):
    name = "multilabel"
    default_loss = "binary_cross_entropy"
    has_classes = True
    vector_output = True
    Fields = MultilabelFields
    metrics = ("micro_f1", "macro_f1", "mean_average_precision")
    gated_metrics = ("e2e_accuracy",)
    label_kind = "tag set"

    def num_outputs(self, task) -> int:
        if not task.classes:
            raise ValueError(f"task '{task.name}': classes are not known yet (resolve the spec with data)")
        return len(task.classes)

    def check_task(self, task) -> list[str]:
        errors = check_classes(task)
        if task.classes is not None and len(task.classes) < 1:
            errors.append("classes: a multilabel task needs at least 1 tag")
        for i, cfg in enumerate(task.losses):
            pw = getattr(cfg, "pos_weight", None)
            where = "loss" if not isinstance(task.loss, list) else f"loss[{i}]"
            if isinstance(pw, list) and task.classes is not None and len(pw) != len(task.classes):
                errors.append(f"{where}.pos_weight: {len(pw)} values for {len(task.classes)} tags; give one "
                              "per tag (in the order of 'classes') or a single number")
        return errors

    def check_gate(self, gate_classes, gate_task, path):
        return check_gate_classes(gate_classes, gate_task, path)

    def infer_classes(self, task, values, table, path):
        first: dict[str, int] = {}
        for j, v in enumerate(values):
            for t in tags(v) or []:
                first.setdefault(t, j)
        if task.classes is None:
            if not first:
                return [], [f"{path}.classes: column '{task.source}' has no tags; list them in 'classes'"]
            return sorted(first), []
        return None, unknown_class_errors(task, first, table, path)

    def label_map(self, task) -> dict:
        return {"type": self.name, "classes": list(task.classes or []), "threshold": task.threshold}

    def encode(self, task, values, table, strict=True):
        from service.ml.data import Labels
        from service.ml.data.archive import DataError

        index = {c: k for k, c in enumerate(task.classes)}
        out = np.zeros((len(values), len(task.classes)), dtype=np.float32)
        mask = np.zeros(len(values), dtype=bool)
        for j, v in enumerate(values):
            if v is None:
                continue
            problem, found = self._problem(v, index)
            if problem is not None:
                if strict:
                    raise DataError(f"{table.where(j, task.source)}: {problem}")
                continue
            out[j, found], mask[j] = 1.0, True
        return Labels(out, mask)

    def _problem(self, v, index: dict[str, int]) -> tuple[str | None, list[int]]:
        got = tags(v)
        if got is None:
            return (f"{show(v)} is not a tag set; expected tags separated by '{SEPARATOR}' (CSV), a JSON list "
                    f"of strings (JSONL) or {EMPTY} for no tag"), []
        unknown = [t for t in got if t not in index]
        if unknown:
            return f"tag '{unknown[0]}' is not one of the classes: {', '.join(index)}", []
        return None, [index[t] for t in got]

    def audit(self, task, values, table, label_errors):
        index = {c: k for k, c in enumerate(task.classes or [])}
        counts = {c: 0 for c in index}
        invalid = 0
        for j, v in enumerate(values):
            if v is None:
                continue
            got = tags(v)
            bad = got is None or (task.classes is not None and any(t not in index for t in got))
            if bad:
                invalid += 1
                if len(label_errors) < 20:
                    label_errors.append(f"{table.where(j, task.source)}: {show(v)} is not a valid tag set")
                continue
            for t in got:
                counts[t] = counts.get(t, 0) + 1
        return {"class_counts": counts if task.classes else dict(sorted(counts.items())), "invalid": invalid}

    def predictions(self, task, out, norm):
        return 1.0 / (1.0 + np.exp(-np.asarray(out, dtype=np.float64)))

    def decode(self, task, preds, out):
        th = task.threshold
        return [{"labels": [c for c, p in zip(task.classes, row, strict=True) if p >= th],
                 "probabilities": dict(zip(task.classes, map(float, row), strict=True))} for row in preds]

    def raw(self, entry):
        return entry["labels"]

    def gated_output(self) -> dict:
        return {"value": None, "labels": None}

    def positive(self, task, gate_classes, values):
        idx = [task.classes.index(c) for c in gate_classes or [] if c in task.classes]
        v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        return (v[:, idx] >= task.threshold).any(axis=1)

    def gate_reason(self, task, gate_classes, pred) -> str:
        return f"{task.name} predicted none of: {', '.join(gate_classes or [])}"

    def scores(self, task, y, p):
        micro, macro = S.f1_micro_macro(y, p >= task.threshold)
        return {"micro_f1": micro, "macro_f1": macro, "mean_average_precision": S.mean_average_precision(y, p)}

    def correct(self, task, y, p):
        return ((np.asarray(y) >= 0.5) == (np.asarray(p) >= task.threshold)).all(axis=1)
