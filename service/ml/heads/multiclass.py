"""multiclass: one label out of `classes` per sample; softmax over K logits; label = class index (int64)."""

from __future__ import annotations

import numpy as np

from service.ml import scores as S
from service.ml.heads import register_head
from service.ml.heads.base import HeadType, check_classes, show


def _archive():
    from service.ml.data import archive, table

    return archive.DataError, table.class_name


@register_head
class Multiclass(HeadType):
    name = "multiclass"
    default_loss = "cross_entropy"
    has_classes = True
    vector_output = True
    metrics = ("accuracy", "macro_f1")
    label_kind = "class"

    def num_outputs(self, task) -> int:
        if not task.classes:
            raise ValueError(f"task '{task.name}': classes are not known yet (resolve the spec with data)")
        return len(task.classes)

    def check_task(self, task) -> list[str]:
        errors = check_classes(task)
        if task.classes is not None and len(task.classes) < 2:
            errors.append(f"classes: a multiclass task needs at least 2 classes; got {len(task.classes)}")
        return errors

    def check_gate(self, gate_classes, gate_task, path: str) -> list[str]:
        return check_gate_classes(gate_classes, gate_task, path)

    def infer_classes(self, task, values, table, path):
        _, class_name = _archive()
        first: dict[str, int] = {}
        for j, v in enumerate(values):
            if v is not None:
                first.setdefault(class_name(v), j)
        if task.classes is None:
            if len(first) < 2:
                return sorted(first), [
                    f"{path}.classes: column '{task.source}' has a single class ('{next(iter(first))}'); "
                    "a multiclass task needs at least 2 (list them in 'classes' or use a binary task)"]
            return sorted(first), []
        return None, unknown_class_errors(task, first, table, path)

    def label_map(self, task) -> dict:
        return {"type": self.name, "classes": list(task.classes or [])}

    def encode(self, task, values, table, strict=True):
        from service.ml.data import Labels

        DataError, class_name = _archive()
        index = {c: k for k, c in enumerate(task.classes)}
        out = np.zeros(len(values), dtype=np.int64)
        mask = np.zeros(len(values), dtype=bool)
        for j, v in enumerate(values):
            if v is None:
                continue
            k = index.get(class_name(v))
            if k is None:
                if strict:
                    raise DataError(f"{table.where(j, task.source)}: {show(v)} is not one of the classes: "
                                    f"{', '.join(task.classes)}")
                continue
            out[j], mask[j] = k, True
        return Labels(out, mask)

    def audit(self, task, values, table, label_errors):
        _, class_name = _archive()
        counts = {c: 0 for c in (task.classes or [])}
        invalid = 0
        for j, v in enumerate(values):
            if v is None:
                continue
            name = class_name(v)
            if task.classes is not None and name not in task.classes:
                invalid += 1
                if len(label_errors) < 20:
                    label_errors.append(f"{table.where(j, task.source)}: {show(v)} is not a valid class")
                continue
            counts[name] = counts.get(name, 0) + 1
        return {"class_counts": counts if task.classes else dict(sorted(counts.items())), "invalid": invalid}

    def train_target(self, task, values, norm):
        return values.astype(np.int64)

    def predictions(self, task, out, norm):
        return np.asarray(out, dtype=np.float64).argmax(axis=1)

    def decode(self, task, preds, out):
        o = np.asarray(out, dtype=np.float64)
        z = np.exp(o - o.max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
        return [{"label": task.classes[i], "probabilities": dict(zip(task.classes, map(float, row), strict=True))}
                for i, row in zip(p.argmax(axis=1), p, strict=True)]

    def positive(self, task, gate_classes, values):
        idx = [task.classes.index(c) for c in gate_classes or [] if c in task.classes]
        return np.isin(np.asarray(values).astype(np.int64), idx)

    def gate_reason(self, task, gate_classes, pred) -> str:
        return f"{task.name} predicted '{task.classes[int(pred)]}'"

    def scores(self, task, y, p):
        return {"accuracy": S.accuracy(y, p), "macro_f1": S.macro_f1(y, p)}

    def correct(self, task, y, p):
        return np.asarray(y) == np.asarray(p)


def check_gate_classes(gate_classes, gate_task, path: str) -> list[str]:
    """A gate on a task with classes: at least one gate class, no duplicates, each one of the task's classes."""
    known = f"; choose from: {', '.join(gate_task.classes)}" if gate_task.classes else ""
    if not gate_classes:
        return [f"{path}.classes: required (at least one class) for {gate_task.type} gate task "
                f"'{gate_task.name}'{known}"]
    errors, seen = [], set()
    for j, c in enumerate(gate_classes):
        if c in seen:
            errors.append(f"{path}.classes[{j}]: duplicate class '{c}'")
        elif gate_task.classes is not None and c not in gate_task.classes:
            errors.append(f"{path}.classes[{j}]: '{c}' is not a class of '{gate_task.name}'; classes are: "
                          f"{', '.join(gate_task.classes)}")
        seen.add(c)
    return errors


def unknown_class_errors(task, first: dict[str, int], table, path: str) -> list[str]:
    unknown = [(c, j) for c, j in first.items() if c not in task.classes]
    errors = [f"{path}.classes: class '{c}' in the data ({table.where(j, task.source)}) is not among the "
              f"classes: {', '.join(task.classes)}" for c, j in unknown[:5]]
    if len(unknown) > 5:
        errors.append(f"{path}.classes: {len(unknown) - 5} more classes in the data are not listed")
    return errors
