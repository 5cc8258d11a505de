"""Dataset -> resolved spec + per-task labels and masks + uint8 image cache; summary and audit.

The public data API of the engine. Reading lives in `service.ml.table` (labels) and `service.ml.archive`
(hostile-input checks), pixels in `service.ml.images`; the names are re-exported here.
Row numbers in messages: `labels.csv row 7` = 7th data row after the header, `labels.jsonl line 7` = physical
line, `data.npz index 6` = 0-based array index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.ml.archive import DEFAULT_LIMITS, DataError, Limits, open_image
from service.ml.images import (
    MAX_IMAGE_PIXELS,
    PREPROCESS_VERSION,
    build_image_cache,
    cache_path,
    iter_images,
    to_pixels,
    verify_images,
)
from service.ml.spec import Spec, SpecError
from service.ml.table import MAX_SUMMARY_VALUES, Table, as_bool, as_number, class_name, read_table

__all__ = [
    "DEFAULT_LIMITS", "MAX_IMAGE_PIXELS", "PREPROCESS_VERSION", "DataError", "Labels", "Limits", "Table",
    "TrainingData", "as_bool", "as_number", "audit", "build_image_cache", "cache_path", "class_name",
    "encode_labels", "iter_images", "load_training_data", "open_image", "read_table", "resolve_spec",
    "summarize", "to_pixels", "verify_images",
]

FLOAT32_MAX = float(np.finfo(np.float32).max)
SPARSE_FRACTION = 0.2  # audit warns below this labelled fraction
RARE_CLASS = 5  # audit warns for classes with fewer samples
MAX_ERRORS = 20  # per list in audit results


@dataclass
class Labels:
    values: np.ndarray  # int64 class index | float32 0/1 | float32 value; 0 where missing
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
    """Check the spec against the data and fill multiclass classes from it (sorted). Raises SpecError:
    missing column (listing the columns), no labelled value, a data class not among the spec's classes
    (naming the class and its first row), gate classes not among the (inferred) classes."""
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
        if task.type != "multiclass":
            continue
        first: dict[str, int] = {}
        for j, v in enumerate(values):
            if v is not None:
                first.setdefault(class_name(v), j)
        if task.classes is None:
            if len(first) < 2:
                errors.append(f"tasks[{i}].classes: column '{column}' has a single class ('{next(iter(first))}'); "
                              "a multiclass task needs at least 2 (list them in 'classes' or use a binary task)")
            inferred[task.name] = sorted(first)
            continue
        unknown = [(c, j) for c, j in first.items() if c not in task.classes]
        for c, j in unknown[:5]:
            errors.append(f"tasks[{i}].classes: class '{c}' in the data ({table.where(j, column)}) is not among "
                          f"the classes: {', '.join(task.classes)}")
        if len(unknown) > 5:
            errors.append(f"tasks[{i}].classes: {len(unknown) - 5} more classes in the data are not listed")
    if errors:
        raise SpecError(errors)
    return spec.with_classes(inferred) if inferred else spec.model_copy(deep=True)


def _encode(task, values: list, table: Table) -> Labels:
    column, n = task.source, len(values)
    mask = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    if task.type == "multiclass":
        index = {c: k for k, c in enumerate(task.classes)}
        out = np.zeros(n, dtype=np.int64)
        for j, v in enumerate(values):
            if v is not None:
                k = index.get(class_name(v))
                if k is None:
                    raise DataError(f"{table.where(j, column)}: {_show(v)} is not one of the classes: "
                                    f"{', '.join(task.classes)}")
                out[j] = k
        return Labels(out, mask)
    out = np.zeros(n, dtype=np.float32)
    for j, v in enumerate(values):
        if v is None:
            continue
        if task.type == "binary":
            b = as_bool(v)
            if b is None:
                raise DataError(f"{table.where(j, column)}: {_show(v)} is not a boolean; "
                                "expected true/false/1/0/yes/no")
            out[j] = 1.0 if b else 0.0
            continue
        x = as_number(v)
        if x is None:
            raise DataError(f"{table.where(j, column)}: {_show(v)} is not a number")
        if not math.isfinite(x) or abs(x) > FLOAT32_MAX:
            raise DataError(f"{table.where(j, column)}: {_show(v)} is not a finite number")
        out[j] = x
    return Labels(out, mask)


def encode_labels(spec: Spec, table: Table) -> dict[str, Labels]:
    """Per task: values (int64 class index | float32 0/1 | float32) and mask (own label present).
    DataError naming row and column for a value of the wrong kind; a task with zero labels is an error."""
    if any(t.type == "multiclass" and t.classes is None for t in spec.tasks):
        spec = resolve_spec(spec, table)
    out: dict[str, Labels] = {}
    for task in spec.tasks:
        column = task.source
        if column not in table.columns:
            raise DataError(f"{table.source}: no column '{column}' (task '{task.name}'); columns are: "
                            f"{', '.join(table.columns) or '(none)'}")
        labels = _encode(task, table.columns[column], table)
        if not labels.mask.any():
            raise DataError(f"{table.source}, column '{column}': no labelled values (task '{task.name}')")
        out[task.name] = labels
    return out


# ------------------------------------------------------------------------------------------------ audit


def _positive(gate, gate_task, v) -> bool | None:
    if v is None or gate_task.type == "regression":
        return None
    if gate_task.type == "binary":
        return as_bool(v)
    return class_name(v) in (gate.classes or [])


def _known_negative(spec: Spec, table: Table) -> dict[str, np.ndarray]:
    """Per gated task: bool (N,) where its gate is known negative (gate labelled and not positive, or the gate
    task itself gated and known negative), from the raw labels."""
    n, memo = len(table), {}

    def negative(name: str, depth: int = 0) -> np.ndarray:
        if name not in memo:
            task = spec.task(name)
            neg = np.zeros(n, dtype=bool)
            if task.gate is not None and depth <= len(spec.tasks) and task.gate.task in spec.task_names:
                g = spec.task(task.gate.task)
                values = table.columns.get(g.source, [None] * n)
                neg = np.fromiter((_positive(task.gate, g, v) is False for v in values), dtype=bool, count=n)
                neg |= negative(g.name, depth + 1)
            memo[name] = neg
        return memo[name]

    return {t.name: negative(t.name) for t in spec.tasks if t.gate is not None}


def _task_audit(task, values: list, n: int, label_errors: list[str], table: Table) -> dict:
    labelled = [(j, v) for j, v in enumerate(values) if v is not None]
    info: dict = {"column": task.source, "type": task.type, "labelled": len(labelled),
                  "fraction": len(labelled) / n if n else 0.0}
    invalid = 0
    if task.type == "regression":
        numbers = []
        for j, v in labelled:
            x = as_number(v)
            if x is None or not math.isfinite(x):
                invalid += 1
                if len(label_errors) < MAX_ERRORS:
                    label_errors.append(f"{table.where(j, task.source)}: {_show(v)} is not a finite number")
            else:
                numbers.append(x)
        arr = np.asarray(numbers, dtype=np.float64)
        stats = (arr.mean(), arr.std(), arr.min(), arr.max()) if arr.size else (None,) * 4
        info.update(zip(("mean", "std", "min", "max"), (None if s is None else float(s) for s in stats),
                        strict=True))
    else:
        counts = {c: 0 for c in (task.classes or [])} if task.type == "multiclass" else {"false": 0, "true": 0}
        for j, v in labelled:
            if task.type == "binary":
                b = as_bool(v)
                name = None if b is None else ("true" if b else "false")
            else:
                name = class_name(v)
                name = name if task.classes is None or name in task.classes else None
            if name is None:
                invalid += 1
                if len(label_errors) < MAX_ERRORS:
                    label_errors.append(f"{table.where(j, task.source)}: {_show(v)} is not a valid "
                                        f"{'boolean' if task.type == 'binary' else 'class'}")
                continue
            counts[name] = counts.get(name, 0) + 1
        info["class_counts"] = counts if task.classes else dict(sorted(counts.items()))
    info["invalid"] = invalid
    return info


def audit(spec: Spec, table: Table) -> dict:
    """Coverage per task against the data, without training. Never raises for spec/data mismatches:
    {"num_samples", "tasks": {name: {"column", "type", "labelled", "fraction", "class_counts" | "mean", "std",
    "min", "max", "invalid", "gate_violations"}}, "warnings", "spec_errors", "label_errors"}."""
    n = len(table)
    result: dict = {"num_samples": n, "tasks": {}, "warnings": list(table.warnings), "spec_errors": [],
                    "label_errors": []}
    try:
        spec = resolve_spec(spec, table)
    except SpecError as exc:
        result["spec_errors"] = list(exc.errors)
    negative = _known_negative(spec, table)
    warnings = result["warnings"]
    for task in spec.tasks:
        values = table.columns.get(task.source)
        if values is None:
            continue
        info = _task_audit(task, values, n, result["label_errors"], table)
        mask = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        info["gate_violations"] = int((mask & negative[task.name]).sum()) if task.name in negative else 0
        result["tasks"][task.name] = info
        if info["labelled"] == 0:
            warnings.append(f"task '{task.name}': no labelled samples")
        elif info["fraction"] < SPARSE_FRACTION:
            warnings.append(f"task '{task.name}': only {info['labelled']} of {n} samples "
                            f"({100 * info['fraction']:.1f}%) are labelled")
        for c, count in info.get("class_counts", {}).items():
            if count < RARE_CLASS and info["labelled"]:
                warnings.append(f"task '{task.name}': class '{c}' has only {count} sample(s)")
        if info["gate_violations"]:
            warnings.append(f"task '{task.name}': {info['gate_violations']} label(s) where the gate "
                            f"'{task.gate.task}' is known negative; they are ignored in training")
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
