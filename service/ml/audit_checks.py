"""The audit's warnings: what keeps a head from learning, found before any training is spent. The audit endpoint
and job creation run them (a job stores its warnings); they never block a job. Each finding is
{"code", "task", "column", "class" (where one applies), "message"}; codes:

- no_labels        the column has no labelled row
- sparse           fewer than SPARSE_FRACTION of the rows are labelled
- few_labels       a class has fewer than MIN_TRAIN_ROWS labelled rows in the training split (the trainer's own
                   seeded, stratified split; labels where the gate is known negative do not count: training
                   ignores them)
- validation_only  a class has labelled rows in the validation split and none in the training split
- gate_no_labels   a gated head has no labelled training row where its gate's positive class holds
- constant         a regression column whose labelled values are all equal (nothing to learn beyond the mean)
- gate_violations  labels where the gate is known negative (ignored in training)
"""

from __future__ import annotations

import numpy as np

from service.ml import gating
from service.ml.spec import Spec

SPARSE_FRACTION = 0.2  # warn below this labelled fraction
MIN_TRAIN_ROWS = 5  # warn when a class has fewer labelled training rows


def _finding(code: str, task, message: str, cls: str | None = None) -> dict:
    where = f"task '{task.name}' (column '{task.source}')"
    out = {"code": code, "task": task.name, "column": task.source, "message": f"{where}: {message}"}
    if cls is not None:
        out["class"] = cls
    return out


def coverage(spec: Spec, tasks: dict[str, dict], n: int) -> list[dict]:
    """Findings from the per-task audit entries alone: no labels, sparse, constant regression, gate violations."""
    out: list[dict] = []
    for task in spec.tasks:
        info = tasks.get(task.name)
        if info is None:
            continue
        if info["labelled"] == 0:
            out.append(_finding("no_labels", task, "no labelled rows"))
        elif info["fraction"] < SPARSE_FRACTION:
            out.append(_finding("sparse", task, f"only {info['labelled']} of {n} rows "
                                                f"({100 * info['fraction']:.1f}%) are labelled"))
        if task.type == "regression" and info.get("min") is not None and info["min"] == info["max"]:
            out.append(_finding("constant", task, f"every labelled value is {info['min']:g}: the head can only "
                                                  f"learn that constant (check the column)"))
        if info.get("gate_violations"):
            out.append(_finding("gate_violations", task, f"{info['gate_violations']} label(s) where the gate "
                                                         f"'{task.gate.task}' is known negative; they are ignored "
                                                         "in training"))
    return out


def class_rows(task, labels) -> tuple[list[str], np.ndarray] | None:
    """(class names, bool (N, K): row is labelled with class k) for class heads; None for value heads."""
    v, m = np.asarray(labels.values), np.asarray(labels.mask, dtype=bool)
    if v.ndim == 2:  # tags
        return list(task.classes or []), (v >= 0.5) & m[:, None]
    if task.type == "binary":
        names, idx = ["false", "true"], (v >= 0.5).astype(np.int64)
    elif task.classes:
        names, idx = list(task.classes), v.astype(np.int64)
    else:
        return None
    rows = np.zeros((len(v), len(names)), dtype=bool)
    where = np.flatnonzero(m)
    rows[where, idx[where]] = True
    return names, rows


def split_checks(spec: Spec, labels: dict, n: int) -> list[dict]:
    """Findings that need the trainer's split: few training labels per class, classes seen only in validation,
    gates whose positive class has no labelled gated training row. `labels`: per task Labels (resolved spec)."""
    from service.ml.data import TrainingData
    from service.ml.train.split import stratified_split

    if n == 0:
        return []
    train_idx, _ = stratified_split(spec, TrainingData(images=np.empty((n, 0), np.uint8), labels=labels))
    train = np.zeros(n, dtype=bool)
    train[train_idx] = True
    values = {k: v.values for k, v in labels.items()}
    masks = {k: np.asarray(v.mask, dtype=bool) for k, v in labels.items()}
    effective = gating.effective_masks(spec, values, masks)
    out: list[dict] = []
    for task in spec.tasks:
        rows = class_rows(task, labels[task.name])
        if rows is None or not masks[task.name].any():
            continue
        names, hit = rows
        hit = hit & effective[task.name][:, None]
        n_train, n_val = (hit & train[:, None]).sum(axis=0), (hit & ~train[:, None]).sum(axis=0)
        for k, name in enumerate(names):
            if n_train[k] == 0 and n_val[k] > 0:
                out.append(_finding("validation_only", task, f"class '{name}' has {n_val[k]} labelled row(s), all "
                                                             "in the validation split: the head never trains on it",
                                    name))
            elif n_train[k] < MIN_TRAIN_ROWS:
                out.append(_finding("few_labels", task, f"class '{name}' has only {n_train[k]} labelled training "
                                                        f"row(s) (fewer than {MIN_TRAIN_ROWS}; {n_val[k]} in "
                                                        "validation)", name))
    for task in spec.tasks:
        if task.gate is not None:
            out += _gate_checks(spec, task, labels, effective, train)
    return out


def _gate_checks(spec: Spec, task, labels: dict, effective: dict, train: np.ndarray) -> list[dict]:
    g = spec.task(task.gate.task)
    gate = labels[g.name]
    positives = task.gate.classes if task.gate.classes else [None]  # binary gate: true
    own = effective[task.name] & train
    out = []
    for cls in positives:
        pos = g.head.positive(g, [cls] if cls is not None else None, gate.values) & np.asarray(gate.mask, bool)
        if not (pos & own).any():
            shown = f"'{g.name}' = '{cls}'" if cls is not None else f"'{g.name}' = true"
            out.append(_finding("gate_no_labels", task, f"its gate {shown} has no training row that also has a "
                                                        f"'{task.source}' label: the head learns nothing there",
                                cls if cls is not None else "true"))
    return out
