"""Heads as Open Inference Protocol output tensors: names, datatypes and shapes per head type, and the values.

Per task (every shape starts with the batch dimension N, -1 in metadata):
  multiclass   <task> FP32 [N, K] probabilities in class order, <task>_label BYTES [N] (the class name)
  binary       <task> FP32 [N] probability of true
  regression   <task> FP32 [N] value
  multilabel   <task> FP32 [N, K] probability per tag, in class order
A gated task also has <task>_gated BOOL [N]: true where its predicted gate chain is negative; there its values are
0 (and its label the empty string), because tensors cannot carry null. The values are those of /v1 predict
(Predictor.predict_arrays, through the same micro-batcher), only laid out as tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]  # without the batch dimension
    task: str


class UnmappedHeadError(ValueError):
    """A head type without a tensor mapping here (add it to KINDS)."""


def _probabilities(task: Any, rows: list[dict]) -> np.ndarray:
    classes = list(task.classes or [])
    out = np.zeros((len(rows), len(classes)), np.float32)
    for i, row in enumerate(rows):
        probs = row.get("probabilities")
        if probs:
            out[i] = [probs[c] for c in classes]
    return out


def _scalar(key: str):
    def values(_task: Any, rows: list[dict]) -> np.ndarray:
        return np.array([row.get(key) or 0.0 for row in rows], np.float32)

    return values


def _labels(_task: Any, rows: list[dict]) -> np.ndarray:
    return np.array([(row.get("label") or "").encode() for row in rows], dtype=object)


def _k(task: Any) -> tuple[int, ...]:
    return (len(task.classes or []),)


# head type -> [(tensor name suffix, datatype, shape without batch (from the task), values from /v1 rows)]
KINDS = {
    "multiclass": [("", "FP32", _k, _probabilities), ("_label", "BYTES", lambda t: (), _labels)],
    "binary": [("", "FP32", lambda t: (), _scalar("probability"))],
    "regression": [("", "FP32", lambda t: (), _scalar("value"))],
    "multilabel": [("", "FP32", _k, _probabilities)],
}


def _kind(task: Any) -> list:
    try:
        return KINDS[task.type]
    except KeyError:
        raise UnmappedHeadError(f"task '{task.name}': head type '{task.type}' has no Open Inference Protocol "
                                "tensor mapping") from None


def output_infos(spec: Any) -> list[TensorInfo]:
    """Every output tensor of a model, in spec task order; raises UnmappedHeadError / ValueError (name clash)."""
    infos = []
    for task in spec.tasks:
        infos += [TensorInfo(task.name + suffix, dtype, shape(task), task.name) for suffix, dtype, shape, _ in _kind(task)]
        if task.gate is not None:
            infos.append(TensorInfo(task.name + "_gated", "BOOL", (), task.name))
    names = [i.name for i in infos]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"output tensor names clash: {', '.join(clash)} (rename the tasks to serve them on /v2)")
    return infos


def _gated(_task: Any, rows: list[dict]) -> np.ndarray:
    return np.array([bool(h.get("gated")) for h in rows], dtype=bool)


@dataclass(frozen=True)
class Plan:
    """A model's output tensors worked out once per spec (the infer hot path reuses it): infos by name, in spec
    order, and for each tensor its task and the function making its values from /v1 rows."""

    infos: dict[str, TensorInfo]
    makers: dict[str, tuple[Any, Any]]


_PLANS: dict[int, tuple[Any, Plan]] = {}  # id(spec) -> (spec, plan); a loaded predictor keeps its spec object


def plan(spec: Any) -> Plan:
    """The cached Plan of `spec` (raises as output_infos on a first call)."""
    cached = _PLANS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    infos = {i.name: i for i in output_infos(spec)}
    makers: dict[str, tuple[Any, Any]] = {}
    for task in spec.tasks:
        makers.update({task.name + suffix: (task, values) for suffix, _dtype, _shape, values in _kind(task)})
        if task.gate is not None:
            makers[task.name + "_gated"] = (task, _gated)
    if len(_PLANS) >= 256:  # specs of versions no longer loaded
        _PLANS.clear()
    result = Plan(infos, makers)
    _PLANS[id(spec)] = (spec, result)
    return result


def output_values(spec: Any, rows: list[dict], wanted: set[str]) -> dict[str, np.ndarray]:
    """/v1 prediction rows (one dict of heads per image) -> {tensor name: array} for the `wanted` names."""
    makers = plan(spec).makers
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        task, values = makers[name]
        out[name] = values(task, [row[task.name] for row in rows])
    return out
