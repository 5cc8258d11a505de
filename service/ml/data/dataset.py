"""Dataset -> resolved spec + per-task labels and masks + uint8 image cache; summary and audit.

Reading lives in `service.ml.data.table` (labels) and `service.ml.data.archive` (hostile-input checks), pixels
in `service.ml.data.images`; `service.ml.data` re-exports the public names of all four.
Row numbers in messages: `labels.csv row 7` = 7th data row after the header, `labels.jsonl line 7` = physical
line, `data.npz index 6` = 0-based array index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.ml import gating
from service.ml.data.archive import DataError, Limits
from service.ml.data.images import build_image_cache, cache_path
from service.ml.data.table import MAX_SUMMARY_VALUES, Table, as_bool, as_number, class_name, read_table
from service.ml.spec import Spec, SpecError

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_ERRORS = 20  # per list in audit results


@dataclass
class Labels:
    values: np.ndarray  # head type's encoding: int64 class index | float32 0/1 | value | (N, K) tags; 0 where missing
    mask: np.ndarray  # bool: own label present (gating is applied later, in losses/train)


@dataclass
class TrainingData:
    images: np.ndarray  # (N, H, W, C) uint8, usually a read-only memmap
    labels: dict[str, Labels]


def _show(v) -> str:
    return f"'{v}'" if isinstance(v, str) else class_name(v)


def _kind(labelled: list) -> str:
    if labelled and all(as_bool(v) is not None for v in labelled):
        return "binary"
    if labelled and all((x := as_number(v)) is not None and math.isfinite(x) for v in labelled):
        return "numeric"
    return "categorical"


def summarize(table: Table) -> dict[str, dict]:
    """{column: {"kind": "binary"|"categorical"|"numeric", "labelled": int, "values": [...]}}; values (sorted,
    distinct, at most 100) only for binary (booleans) and categorical (class strings) columns."""
    out: dict[str, dict] = {}
    for column, values in table.columns.items():
        labelled = [v for v in values if v is not None]
        kind = _kind(labelled)
        entry: dict = {"kind": kind, "labelled": len(labelled)}
        if kind == "binary":
            entry["values"] = sorted({as_bool(v) for v in labelled})
        elif kind == "categorical":
            entry["values"] = sorted({class_name(v) for v in labelled})[:MAX_SUMMARY_VALUES]
        out[column] = entry
    return out


def resolve_spec(spec: Spec, table: Table) -> Spec:
    """Check the spec against the data and fill `classes` the head types infer from it (sorted). Raises SpecError:
    missing column (listing the columns), no labelled value, a data class not among the spec's classes (naming
    the class and its first row), gate classes not among the (inferred) classes."""
    errors: list[str] = []
    inferred: dict[str, list[str]] = {}
    available = ", ".join(table.columns) or "(none)"
    for i, task in enumerate(spec.tasks):
        column, path = task.source, f"tasks[{i}].{'column' if task.column else 'name'}"
        if column not in table.columns:
            errors.append(f"{path}: column '{column}' is not in the dataset; columns are: {available}")
            continue
        values = table.columns[column]
        if all(v is None for v in values):
            errors.append(f"{path}: column '{column}' has no labelled values")
            continue
        classes, errs = task.head.infer_classes(task, values, table, f"tasks[{i}]")
        errors += errs
        if classes is not None and not errs:
            inferred[task.name] = classes
    if errors:
        raise SpecError(errors)
    return spec.with_classes(inferred) if inferred else spec.model_copy(deep=True)


def encode_labels(spec: Spec, table: Table) -> dict[str, Labels]:
    """Per task: values (head type's encoding: int64 class index | float32 0/1 | float32 | (N, K) tags) and mask
    (own label present). DataError naming row and column for a bad value; a task with zero labels is an error."""
    if any(t.head.has_classes and t.classes is None for t in spec.tasks):
        spec = resolve_spec(spec, table)
    out: dict[str, Labels] = {}
    for task in spec.tasks:
        column = task.source
        if column not in table.columns:
            raise DataError(f"{table.source}: no column '{column}' (task '{task.name}'); columns are: "
                            f"{', '.join(table.columns) or '(none)'}")
        labels = task.head.encode(task, table.columns[column], table)
        if not labels.mask.any():
            raise DataError(f"{table.source}, column '{column}': no labelled values (task '{task.name}')")
        out[task.name] = labels
    return out


# ------------------------------------------------------------------------------------------------ audit


def _audit_labels(spec: Spec, table: Table) -> dict[str, Labels]:
    """Per task: its labels as the trainer encodes them, invalid values counted as missing."""
    n = len(table)
    out: dict[str, Labels] = {}
    for t in spec.tasks:
        try:
            out[t.name] = t.head.encode(t, table.columns.get(t.source, [None] * n), table, strict=False)
        except (ValueError, TypeError, AttributeError):  # classes unknown (the spec did not resolve)
            out[t.name] = Labels(np.zeros(n), np.zeros(n, dtype=bool))
    return out


def audit(spec: Spec, table: Table) -> dict:
    """Coverage per task against the data, without training. Never raises for spec/data mismatches:
    {"num_samples", "tasks": {name: {"column", "type", "labelled", "fraction", "class_counts" | "mean", "std",
    "min", "max", "invalid", "gate_violations"}}, "warnings", "findings", "spec_errors", "label_errors"}.
    `findings` are the audit's own warnings as objects ({"code", "task", "column", "class"?, "message"}; codes in
    service/ml/audit_checks.py); `warnings` holds their messages after the dataset's own warnings."""
    from service.ml import audit_checks

    n = len(table)
    result: dict = {"num_samples": n, "tasks": {}, "warnings": list(table.warnings), "findings": [],
                    "spec_errors": [], "label_errors": []}
    try:
        spec = resolve_spec(spec, table)
    except SpecError as exc:
        result["spec_errors"] = list(exc.errors)
    labels = _audit_labels(spec, table)
    negative = gating.known_negative(spec, {k: v.values for k, v in labels.items()},
                                     {k: v.mask for k, v in labels.items()})
    for task in spec.tasks:
        values = table.columns.get(task.source)
        if values is None:
            continue
        labelled = sum(v is not None for v in values)
        info: dict = {"column": task.source, "type": task.type, "labelled": labelled,
                      "fraction": labelled / n if n else 0.0}
        info.update(task.head.audit(task, values, table, result["label_errors"]))
        mask = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        info["gate_violations"] = int((mask & negative[task.name]).sum()) if task.gate is not None else 0
        result["tasks"][task.name] = info
    findings = audit_checks.coverage(spec, result["tasks"], n)
    if not result["spec_errors"]:  # the split and the gates need a resolved spec
        findings += audit_checks.split_checks(spec, labels, n)
    result["findings"] = findings
    result["warnings"] += [f["message"] for f in findings]
    return result


def load_training_data(spec: Spec, path: Path, cache_dir: Path, limits: Limits | None = None
                       ) -> tuple[Spec, TrainingData]:
    """read_table -> resolve_spec -> encode_labels -> build_image_cache (reused when present)."""
    table = read_table(path, limits)
    resolved = resolve_spec(spec, table)
    labels = encode_labels(resolved, table)
    size, channels = resolved.model.image_size, resolved.model.channels
    images = build_image_cache(path, table, size, channels, cache_path(cache_dir, size, channels), limits)
    return resolved, TrainingData(images=images, labels=labels)
