"""The training spec: tasks (heads), losses, gates, weighting, model and training settings.

`parse_spec(data)` is the one entry point for untrusted input; it returns a validated, normalised `Spec`
(loss names become loss configs, default losses and every default value are filled in) or raises `SpecError`
whose messages name the field and say what is allowed. Head types, losses and weighting strategies come from
their registries (service.ml.heads, service.ml.losses, service.ml.weighting): what is registered is allowed.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.ml import losses as L
from service.ml.distributed import spec_errors as _parallel_errors
from service.ml.heads import HEAD_TYPES
from service.ml.spec_messages import convert_errors
from service.ml.spec_messages import show as _show
from service.ml.spec_settings import (  # noqa: F401 - the settings sections, re-exported
    AUTO_MAX_EPOCHS,
    AUTO_MIN_EPOCHS,
    AUTO_MINUTES,
    AUTO_SAMPLE_VISITS,
    MAX_EPOCHS,
    PATIENCE,
    Augmentation,
    EarlyStopping,
    InitFrom,
    ModelConfig,
    TrainingConfig,
    Weighting,
    auto_epochs,
)
from service.ml.strict import SpecError, StrictModel, validate_part

__all__ = ["Gate", "InitFrom", "ModelConfig", "Spec", "SpecError", "Task", "TrainingConfig", "Weighting",
           "auto_epochs", "parse_spec"]

_Model = StrictModel
# v1 names of the loss configs (kept for callers)
CrossEntropyLoss, BinaryCrossEntropyLoss, FocalLoss, HuberLoss, MSELoss, MAELoss = (
    L.LOSSES[n].config for n in ("cross_entropy", "binary_cross_entropy", "focal", "huber", "mse", "mae"))
TASK_TYPES = tuple(HEAD_TYPES)


# ---------------------------------------------------------------- tasks
class Gate(_Model):
    """The head applies only where `task` is positive: binary gate task -> label true (classes omitted);
    multiclass / multilabel gate task -> label (one of the tags) in `classes`."""

    task: str
    classes: list[str] | None = None


class Task(BaseModel):
    """One head. `type` is a registered head type; its extra fields (e.g. multilabel `threshold`) are validated by
    the head type's `Fields` model; `loss` is one registered loss config or a list of them."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=100)
    column: str | None = Field(None, min_length=1)
    type: str
    classes: list[str] | None = None
    loss: Any = None
    weight: float = Field(1.0, ge=0.0)
    gate: Gate | None = None
    standardize: bool = True  # regression only (ignored for other heads)

    @property
    def source(self) -> str:
        """The dataset column holding this task's labels."""
        return self.column or self.name

    @property
    def head(self):
        return HEAD_TYPES[self.type]

    @property
    def losses(self) -> list[L.LossConfig]:
        return L.loss_list(self)

    @property
    def num_outputs(self) -> int:
        """Width of the head's output (classes must be known for multiclass / multilabel)."""
        return self.head.num_outputs(self)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("type")
        if not isinstance(kind, str) or kind not in HEAD_TYPES:
            shown = "required field is missing" if kind is None else f"{_show(kind)} is not allowed"
            raise SpecError([f"type: {shown}; allowed: {', '.join(HEAD_TYPES)}"])
        head = HEAD_TYPES[kind]
        declared = list(cls.model_fields)
        extra = {k: v for k, v in data.items() if k not in declared}
        try:
            fields = validate_part(head.Fields, extra)
        except SpecError as exc:
            allowed = ", ".join([*declared, *head.Fields.model_fields])
            raise SpecError([e.replace("unknown field; allowed: " + (", ".join(head.Fields.model_fields)
                                                                      or "(none)"), f"unknown field; allowed: {allowed}")
                             for e in exc.errors]) from None
        data.update(fields.model_dump())
        data["loss"] = L.parse_losses(data.get("loss") or head.default_loss, kind)
        return data

    @model_validator(mode="after")
    def _check(self) -> Task:
        errors = []
        if "." in self.name:
            errors.append(f"name: '{self.name}' may not contain '.'; set 'column' for the dataset column")
        errors += self.head.check_task(self)
        if errors:
            raise SpecError(errors)
        return self


# ---------------------------------------------------------------- spec
class Spec(_Model):
    spec_version: Literal[1] = 1
    tasks: list[Task] = Field(min_length=1)
    weighting: Weighting = Field(default_factory=Weighting)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"'{name}' is not a task; tasks are: {', '.join(self.task_names)}")

    def gate_order(self) -> list[str]:
        """Task names ordered so every gate task comes before the tasks it gates (stable in spec order)."""
        done: list[str] = []
        pending = list(self.tasks)
        while pending:
            for t in pending:
                if t.gate is None or t.gate.task in done:
                    done.append(t.name)
                    pending.remove(t)
                    break
        return done

    def gate_class_indices(self, name: str) -> list[int] | None:
        """For task `name` gated on a multiclass task: indices (into the gate task's classes) of the positive
        gate classes. None when the task has no gate or its gate task is binary (positive = true)."""
        gate = self.task(name).gate
        if gate is None or gate.classes is None:
            return None
        gate_classes = self.task(gate.task).classes
        if gate_classes is None:
            raise ValueError(f"task '{gate.task}': classes are not known yet (resolve the spec with data)")
        return [gate_classes.index(c) for c in gate.classes]

    def with_classes(self, classes: dict[str, list[str]]) -> Spec:
        """A re-validated copy with multiclass `classes` filled in (e.g. inferred from data); raises SpecError."""
        data = self.to_json_dict()
        for t in data["tasks"]:
            if t["name"] in classes:
                t["classes"] = list(classes[t["name"]])
        return parse_spec(data)

    def to_json_dict(self) -> dict:
        """JSON-ready dict with every default filled in; parse_spec(spec.to_json_dict()) == spec."""
        return self.model_dump(mode="json")

    @model_validator(mode="after")
    def _check(self) -> Spec:
        errors: list[str] = []
        names = self.task_names
        first: dict[str, int] = {}
        for i, t in enumerate(self.tasks):
            if t.name in first:
                errors.append(f"tasks[{i}].name: duplicate task name '{t.name}' (also tasks[{first[t.name]}])")
            else:
                first[t.name] = i
        if all(t.weight == 0 for t in self.tasks):
            errors.append("tasks: every task weight is 0; at least one task needs weight > 0")
        valid_gate: dict[str, str] = {}
        for i, t in enumerate(self.tasks):
            if t.gate is not None:
                path = f"tasks[{i}].gate"
                before = len(errors)
                errors += _gate_errors(self, t, path, names)
                if len(errors) == before and first.get(t.name) == i:
                    valid_gate[t.name] = t.gate.task
        errors += _cycle_errors(valid_gate, first)
        if self.training.init_from is not None and self.model.pretrained is not None:
            errors.append("training.init_from: cannot be combined with model.pretrained (the trunk comes from the "
                          "version named in init_from)")
        es = self.training.early_stopping
        if es is not None and es.metric != "val_loss":
            task_name, dot, metric = es.metric.partition(".")
            if not dot or not metric or task_name not in names:
                errors.append(
                    f"training.early_stopping.metric: '{es.metric}' is not allowed; allowed: val_loss or "
                    f"<task>.<metric> with task one of: {', '.join(names)}"
                )
        errors += _parallel_errors(self)
        if errors:
            raise SpecError(errors)
        return self


def _gate_errors(spec: Spec, t: Task, path: str, names: list[str]) -> list[str]:
    gate = t.gate
    assert gate is not None
    if gate.task == t.name:
        return [f"{path}.task: a task cannot gate itself ('{t.name}'); gate on another task"]
    if gate.task not in names:
        return [f"{path}.task: '{gate.task}' is not a task; tasks are: {', '.join(names)}"]
    g = spec.task(gate.task)
    return g.head.check_gate(gate.classes, g, path)


def _cycle_errors(gate_of: dict[str, str], index: dict[str, int]) -> list[str]:
    errors, reported = [], set()
    for start in gate_of:
        chain, node = [start], gate_of[start]
        while node in gate_of and node not in chain:
            chain.append(node)
            node = gate_of[node]
        if node in chain:
            cycle = chain[chain.index(node):]
            key = frozenset(cycle)
            if key not in reported:
                reported.add(key)
                first = min(cycle, key=index.__getitem__)
                k = cycle.index(first)
                cycle = cycle[k:] + cycle[:k]
                shown = " -> ".join([*cycle, first])
                errors.append(f"tasks[{index[first]}].gate: gate cycle {shown}; chains are allowed, cycles are not")
    return errors


# ---------------------------------------------------------------- parsing and error messages
def parse_spec(data: dict | str | bytes | Spec) -> Spec:
    """Validate and normalise a spec (dict, JSON text or bytes). Raises SpecError with field paths."""
    if isinstance(data, Spec):
        return data
    if isinstance(data, str | bytes | bytearray):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SpecError([f"spec: not valid JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"spec: must be a JSON object; got {type(data).__name__}"])
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(convert_errors(exc, data, Spec)) from None
