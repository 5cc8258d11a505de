"""Warm start (`training.init_from`): a new network begins from a registered version's weights.

The trunk (everything but the heads) is copied whole; it must have the same architecture, which `trunk_mismatch`
checks from the two specs (the API calls it before queueing: 422) and `apply` checks again tensor by tensor. A head
is copied when the parent has a head of the same name, head type, classes (multiclass/multilabel, in the same order)
and parameter shapes; every other head keeps its fresh initialisation. `apply` says which in its report, which the
job's metrics and the new version carry ("warm_start").
"""

from __future__ import annotations

import torch
from torch import nn

from service.ml.spec import Spec, SpecError

# the ModelConfig fields that decide the trunk's tensors (image_size and dropout do not change any shape)
TRUNK_FIELDS = {"headwise": ("backbone", "channels", "width", "depth"), "other": ("backbone",)}


def trunk_mismatch(parent: Spec, spec: Spec) -> list[str]:
    """Why `spec`'s trunk cannot start from `parent`'s (empty when it can)."""
    kind = "headwise" if spec.model.backbone == "headwise" else "other"
    out = []
    for field in TRUNK_FIELDS[kind]:
        mine, theirs = getattr(spec.model, field), getattr(parent.model, field)
        if mine != theirs:
            out.append(f"model.{field} is {mine!r} here but {theirs!r} in the version")
    return out


def _head_mismatch(parent: Spec, spec: Spec, name: str) -> str | None:
    if name not in parent.task_names:
        return "new task"
    mine, theirs = spec.task(name), parent.task(name)
    if mine.type != theirs.type:
        return f"head type {mine.type} here, {theirs.type} in the version"
    if mine.classes != theirs.classes:
        return "other classes than in the version"
    return None


def apply(model: nn.Module, spec: Spec, parent: Spec, parent_state: dict[str, torch.Tensor],
          source: dict | None = None) -> dict:
    """Copy the parent's trunk and matching heads into `model` (a MultiTaskCNN built from `spec`, classes
    resolved). Raises SpecError naming training.init_from when the trunks differ. Returns the report:
    {"parent": source, "trunk_tensors": n, "heads_copied": [...], "heads_new": {task: reason}}."""
    problems = trunk_mismatch(parent, spec)
    own = model.state_dict()
    trunk = {k: v for k, v in own.items() if not k.startswith("heads.")}
    for key, tensor in trunk.items():
        if key not in parent_state:
            problems.append(f"the version has no tensor {key}")
        elif tuple(parent_state[key].shape) != tuple(tensor.shape):
            problems.append(f"{key} has shape {tuple(tensor.shape)} here but {tuple(parent_state[key].shape)} "
                            "in the version")
        if len(problems) >= 5:
            break
    if problems:
        raise SpecError([f"training.init_from: the version's trunk does not fit this spec: {'; '.join(problems)}"])
    new_state = {k: parent_state[k] for k in trunk}
    copied, fresh = [], {}
    for i, name in enumerate(spec.task_names):
        reason = _head_mismatch(parent, spec, name)
        if reason is None:
            j = parent.task_names.index(name)
            mine = {k: v for k, v in own.items() if k.startswith(f"heads.{i}.")}
            theirs = {k.replace(f"heads.{i}.", f"heads.{j}.", 1): v for k, v in mine.items()}
            bad = [k for k, v in theirs.items() if k not in parent_state or parent_state[k].shape != v.shape]
            if bad:
                reason = "other parameter shapes than in the version (model.head_hidden or the output width)"
            else:
                new_state.update({k: parent_state[theirs_key] for k, theirs_key in zip(mine, theirs, strict=True)})
        if reason is None:
            copied.append(name)
        else:
            fresh[name] = reason
    model.load_state_dict(new_state, strict=False)
    return {"parent": source, "trunk_tensors": len(trunk), "heads_copied": copied, "heads_new": fresh}
