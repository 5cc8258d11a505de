"""The audit's warnings (service/ml/audit_checks.py), each on a dataset constructed to trigger it, and a healthy
dataset that triggers none: few training labels for a class, a class seen only in validation (given the
trainer's own split), a gate whose positive class has no labelled gated row, a constant regression column."""

from __future__ import annotations

import numpy as np

from service.ml.audit_checks import MIN_TRAIN_ROWS
from service.ml.data import TrainingData, audit, encode_labels, read_table, resolve_spec
from service.ml.spec import parse_spec
from service.ml.train.split import stratified_split

N = 40


def spec_of(*tasks: dict, **training) -> object:
    return parse_spec({"tasks": list(tasks), "training": {"val_fraction": 0.25, **training}})


def healthy_rows() -> list[dict]:
    """40 rows: shape circle/square alternating, size on every row, flat varying, tag on every row."""
    return [{"image": f"{k}.png", "shape": ("circle", "square")[k % 2], "size": str(1 + k % 7),
             "flat": str(k / 10), "tag": ("true", "false")[k % 3 == 0]} for k in range(N)]


def findings(make_zip_dataset, rows, *tasks, name="d.zip") -> list[dict]:
    table = read_table(make_zip_dataset(rows, name=name))
    result = audit(spec_of(*tasks), table)
    assert result["spec_errors"] == [] and result["label_errors"] == [], result
    messages = [f["message"] for f in result["findings"]]
    assert result["warnings"][len(result["warnings"]) - len(messages):] == messages
    return result["findings"]


def codes(found: list[dict]) -> set[tuple]:
    return {(f["code"], f["task"], f.get("class")) for f in found}


SHAPE = {"name": "shape", "type": "multiclass"}
SIZE = {"name": "size", "type": "regression", "gate": {"task": "shape", "classes": ["circle", "square"]}}


def test_a_healthy_dataset_has_no_warning(make_zip_dataset):
    assert findings(make_zip_dataset, healthy_rows(), SHAPE, SIZE, {"name": "flat", "type": "regression"},
                    {"name": "tag", "type": "binary"}) == []


def test_a_class_with_too_few_training_labels(make_zip_dataset):
    rows = healthy_rows()
    for k in (0, 10, 20):  # three triangles in all: fewer than MIN_TRAIN_ROWS in training whatever the split
        rows[k]["shape"] = "triangle"
    found = findings(make_zip_dataset, rows, SHAPE)
    hit = [f for f in found if f["code"] == "few_labels"]
    assert [(f["task"], f["column"], f["class"]) for f in hit] == [("shape", "shape", "triangle")], found
    assert "class 'triangle' has only" in hit[0]["message"] and f"fewer than {MIN_TRAIN_ROWS}" in hit[0]["message"]
    assert hit[0]["message"].startswith("task 'shape' (column 'shape'): ")


def test_a_class_seen_only_in_validation(make_zip_dataset):
    rows = healthy_rows()
    spec = spec_of(SHAPE, {"name": "kind", "type": "multiclass"})
    for k, r in enumerate(rows):
        r["kind"] = ("a", "b")[k % 2]
    table = read_table(make_zip_dataset(rows, name="probe.zip"))
    resolved = resolve_spec(spec, table)
    _, val = stratified_split(resolved, TrainingData(np.empty((N, 0)), encode_labels(resolved, table)))
    for k in val[:3]:  # the trainer's split is stratified on 'shape' only: 'kind' may name rows in validation
        rows[k]["kind"] = "rare"
    found = findings(make_zip_dataset, rows, SHAPE, {"name": "kind", "type": "multiclass"})
    assert ("validation_only", "kind", "rare") in codes(found), found
    hit = next(f for f in found if f["code"] == "validation_only")
    assert hit["column"] == "kind" and "3 labelled row(s), all in the validation split" in hit["message"]
    # the same class on training rows: no longer validation-only (too few, though)
    for k in val[:3]:
        rows[k]["kind"] = "a"
    train_rows = [k for k in range(N) if k not in set(val.tolist())][:3]
    for k in train_rows:
        rows[k]["kind"] = "rare"
    found = findings(make_zip_dataset, rows, SHAPE, {"name": "kind", "type": "multiclass"}, name="d2.zip")
    assert ("validation_only", "kind", "rare") not in codes(found) and ("few_labels", "kind", "rare") in codes(found)


def test_a_gate_whose_positive_class_has_no_gated_labels(make_zip_dataset):
    rows = healthy_rows()
    for r in rows:
        if r["shape"] == "square":
            r["size"] = None  # size is labelled on circles only, though the gate opens on squares too
    found = findings(make_zip_dataset, rows, SHAPE, SIZE)
    assert codes(found) == {("gate_no_labels", "size", "square")}, found
    assert "its gate 'shape' = 'square' has no training row that also has a 'size' label" in found[0]["message"]
    # a binary gate: 'size' labelled only where the gate 'tag' is false (those labels are also ignored)
    rows = healthy_rows()
    for r in rows:
        if r["tag"] == "true":
            r["size"] = None
    found = findings(make_zip_dataset, rows, {"name": "tag", "type": "binary"},
                     {"name": "size", "type": "regression", "gate": {"task": "tag"}}, name="d2.zip")
    assert {("gate_no_labels", "size", "true"), ("gate_violations", "size", None)} == codes(found), found


def test_a_constant_regression_column(make_zip_dataset):
    rows = healthy_rows()
    for r in rows:
        r["flat"] = "2.5"
    found = findings(make_zip_dataset, rows, SHAPE, {"name": "level", "type": "regression", "column": "flat"})
    assert codes(found) == {("constant", "level", None)}, found
    assert found[0]["column"] == "flat" and "every labelled value is 2.5" in found[0]["message"]
