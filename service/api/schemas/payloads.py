"""Engine-made payloads documented field by field (extra keys allowed for new fields): column summaries,
metrics, history, per-head /predict outputs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.schemas.base import (
    _absent,
)


class ColumnSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: Literal["binary", "categorical", "numeric"] = Field(description="what the labels look like")
    labelled: int = Field(description="rows with a label in this column")
    values: list[str] | list[bool] | None = Field(default=None, exclude_if=_absent,
                                                  description="distinct values (binary, categorical only)")


class HeadTrainStats(BaseModel):
    model_config = ConfigDict(extra="allow")
    loss: float | None = Field(default=None, description="mean training loss over labelled samples")
    labelled: int | None = Field(default=None, exclude_if=_absent)


class ParentRef(BaseModel):
    model: str
    version: int


class WarmStart(BaseModel):
    """What a warm start (`training.init_from`) copied from its version; the other heads started fresh."""

    model_config = ConfigDict(extra="allow")
    parent: ParentRef = Field(description="the version it started from")
    trunk_tensors: int = Field(description="trunk tensors copied (the whole trunk)")
    heads_copied: list[str] = Field(description="heads whose name, type, classes and shape matched")
    heads_new: dict[str, str] = Field(description="{head: why it started fresh}")


class HeadBaseline(BaseModel):
    """A head's primary validation metric beside its trivial baseline (service/ml/baselines.py)."""

    model_config = ConfigDict(extra="allow")
    metric: str = Field(description="the head's primary metric (accuracy, micro_f1 or rmse)")
    kind: str | None = Field(default=None, description="majority class, per-tag majority or mean predictor")
    value: float | None = Field(default=None, description="the model's value (best epoch, validation split)")
    baseline: float | None = Field(default=None, description="the trivial baseline's value on the same samples "
                                   "(fitted on the training split)")
    beats_baseline: bool | None = Field(default=None, description="false: the head is flagged, it learned no more "
                                        "than the baseline; null when either value is missing")


class Metrics(BaseModel):
    """The best epoch's validation metrics: `val_loss` and per head (multiclass accuracy/macro_f1, binary
    accuracy/roc_auc, regression rmse/mae, gated heads also end-to-end figures), and per head its primary metric
    beside the trivial baseline (`baselines`; models trained before it existed have none)."""

    model_config = ConfigDict(extra="allow")
    val_loss: float | None = Field(default=None, exclude_if=_absent)
    tasks: dict[str, dict[str, Any]] | None = Field(default=None, exclude_if=_absent,
                                                    description="{head: {metric: value}}")
    warm_start: WarmStart | None = Field(default=None, exclude_if=_absent,
                                         description="training.init_from: what was copied from the version")
    baselines: dict[str, HeadBaseline] | None = Field(default=None, exclude_if=_absent,
                                                      description="{head: primary metric vs trivial baseline}")


class HistoryEntry(BaseModel):
    """One epoch of training."""

    model_config = ConfigDict(extra="allow")
    epoch: int
    lr: float | None = Field(default=None, exclude_if=_absent)
    seconds: float | None = Field(default=None, exclude_if=_absent)
    images_per_second: float | None = Field(default=None, exclude_if=_absent)
    weights: dict[str, float] | None = Field(default=None, exclude_if=_absent,
                                             description="task weights used this epoch")
    train: dict[str, HeadTrainStats] | None = Field(default=None, exclude_if=_absent)
    val: dict[str, dict[str, Any]] | None = Field(default=None, exclude_if=_absent,
                                                  description="{head: {metric: value}}")
    val_loss: float | None = Field(default=None, exclude_if=_absent)


class _Output(BaseModel):
    model_config = ConfigDict(extra="allow")
    gated: Literal[False] | None = Field(default=None, exclude_if=_absent,
                                         description="present (false) on a gated head whose gate was predicted "
                                         "positive")


class MulticlassOutput(_Output):
    label: str
    probabilities: dict[str, float] = Field(description="{class: probability}, summing to 1")


class BinaryOutput(_Output):
    label: bool
    probability: float = Field(ge=0, le=1)


class MultilabelOutput(_Output):
    labels: list[str] = Field(description="the classes at or above the task's threshold")
    probabilities: dict[str, float] = Field(description="{class: probability}, independent per class")


class RegressionOutput(_Output):
    value: float | None = Field(description="null only if the model produced a non-finite number")


class GatedOutput(BaseModel):
    """A gated head whose predicted gate is negative: no value."""

    model_config = ConfigDict(extra="allow")
    value: None
    label: None = Field(default=None, exclude_if=_absent, description="classification heads (multiclass, binary)")
    labels: None = Field(default=None, exclude_if=_absent, description="multilabel heads")
    gated: Literal[True]
    reason: str = Field(examples=["category predicted 'none'"])


HeadOutput = MulticlassOutput | BinaryOutput | MultilabelOutput | RegressionOutput | GatedOutput
