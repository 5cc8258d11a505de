"""HeadType: everything that depends on what a head predicts, in one object per head type.

A head type owns: its extra spec fields (`Fields`), class rules, label encoding from a table column (with the
row/column error messages), the training target array and how masked-out targets are made safe, default and
allowed losses (via the loss registry's `heads`), output decoding for /predict, metrics, "is positive" for
gating (and the gate reason text), its uncertainty-weighting scale and its audit entry.

Arrays: `values` = labels in label units, (N,) or (N, K) for vector heads; `predictions` = the head's decoded
network outputs in the same units (class index, probability, value, tag probabilities).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from service.ml.strict import StrictModel


class NoFields(StrictModel):
    pass


class HeadType:
    name: str = ""
    default_loss: str = ""
    has_classes = False  # the spec's `classes` applies (and is inferred from data when omitted)
    can_gate = True  # may be the gate of another task
    vector_output = False  # network output (B, K) instead of (B,)
    uncertainty_scale = 1.0  # Kendall et al.: 1 for classification likelihoods, 1/2 for Gaussian regression
    Fields: type[StrictModel] = NoFields  # extra per-task spec fields
    metrics: tuple[str, ...] = ()
    gated_metrics: tuple[str, ...] = ("e2e_accuracy",)
    label_kind = "value"  # word used in audit/label messages

    # ------------------------------------------------------------ spec
    def num_outputs(self, task) -> int:
        return 1

    def check_task(self, task) -> list[str]:
        """Spec errors of a task of this type (field paths relative to the task)."""
        if task.classes is not None and not self.has_classes:
            return [f"classes: only allowed for {', '.join(_class_heads())} tasks; this task is {self.name}"]
        return []

    def check_gate(self, gate_classes: list[str] | None, gate_task, path: str) -> list[str]:
        """Errors of a `gate` that points at a task of this type."""
        if not self.can_gate:
            kinds = [n for n, h in _heads().items() if h.can_gate]
            return [f"{path}.task: '{gate_task.name}' is a {self.name} task; a gate must be a "
                    f"{', '.join(kinds[:-1])} or {kinds[-1]} task"]
        return []

    def infer_classes(self, task, values: list, table, path: str) -> tuple[list[str] | None, list[str]]:
        """(classes inferred from the column or None, spec errors) when resolving a spec against data."""
        return None, []

    def label_map(self, task) -> dict:
        return {"type": self.name}

    # ------------------------------------------------------------ data
    def encode(self, task, values: list, table, strict: bool = True):
        """Raw column values -> Labels(values, mask). strict: DataError naming row and column for a bad value;
        not strict (audit): bad values count as missing."""
        raise NotImplementedError

    def audit(self, task, values: list, table, label_errors: list[str]) -> dict:
        """Extra audit entries for this task ("class_counts" or stats) plus "invalid"."""
        raise NotImplementedError

    # ------------------------------------------------------------ training
    def normalization(self, task, values: np.ndarray) -> dict | None:
        """Label normalisation from the training labels (regression only)."""
        return None

    def train_target(self, task, values: np.ndarray, norm: dict | None) -> np.ndarray:
        return values.astype(np.float32)

    def safe_target(self, target: Tensor, mask: Tensor, output: Tensor) -> Tensor:
        m = mask if target.dim() == 1 else mask[:, None]
        return target.where(m, target.new_zeros(()))

    # ------------------------------------------------------------ outputs
    def predictions(self, task, out: np.ndarray, norm: dict | None) -> np.ndarray:
        raise NotImplementedError

    def decode(self, task, preds: np.ndarray, out: np.ndarray) -> list[dict]:
        """/predict entries per sample from predictions (and raw outputs)."""
        raise NotImplementedError

    def raw(self, entry: dict) -> Any:
        return entry["label"]

    def gated_output(self) -> dict:
        return {"value": None, "label": None}

    # ------------------------------------------------------------ gating
    def positive(self, task, gate_classes: list[str] | None, values: np.ndarray) -> np.ndarray:
        """Bool (N,): is this (gate) head positive for a gated task with `gate_classes`, from labels or
        predictions (same units)."""
        raise NotImplementedError

    def gate_reason(self, task, gate_classes: list[str] | None, pred) -> str:
        """Why a gate on this head is closed for one sample's prediction."""
        raise NotImplementedError

    # ------------------------------------------------------------ metrics
    def scores(self, task, y: np.ndarray, p: np.ndarray) -> dict:
        raise NotImplementedError

    def correct(self, task, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Bool (n,): prediction right per sample (for e2e_accuracy)."""
        raise NotImplementedError

    def e2e_scores(self, task, y: np.ndarray, p: np.ndarray, hit: np.ndarray) -> dict:
        """End-to-end metrics of a gated head: a closed predicted gate (hit False) counts as wrong."""
        return {"e2e_accuracy": float(np.mean(self.correct(task, y, p) & hit)) if len(hit) else None}


def _heads() -> dict[str, HeadType]:
    from service.ml.heads import HEAD_TYPES

    return HEAD_TYPES


def _class_heads() -> list[str]:
    return [n for n, h in _heads().items() if h.has_classes]


def check_classes(task) -> list[str]:
    """Spec errors of an explicit class list (empty names, duplicates)."""
    errors, seen = [], set()
    for i, c in enumerate(task.classes or []):
        if c == "":
            errors.append(f"classes[{i}]: empty class name")
        elif c in seen:
            errors.append(f"classes[{i}]: duplicate class '{c}'")
        seen.add(c)
    return errors


def show(v) -> str:
    from service.ml.data.table import class_name

    return f"'{v}'" if isinstance(v, str) else class_name(v)
