"""The spec's settings sections: `weighting`, `model` and `training` (with early stopping, augmentation, warm start),
and "auto" epochs. Part of the spec (service.ml.spec re-exports every name); README "Training defaults" gives the
reasoning behind each default."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.ml.backbones import BACKBONES
from service.ml.distributed import MAX_DEVICES
from service.ml.spec_messages import show as _show
from service.ml.strict import SpecError, StrictModel, validate_part

_Model = StrictModel

MAX_EPOCHS = 10000
# epochs "auto" (see auto_epochs and README "Training defaults"); the budget applies when max_minutes is unset
AUTO_SAMPLE_VISITS, AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS, AUTO_MINUTES = 24000, 10, 60, 60.0
PATIENCE = 5  # early stopping's default patience (epochs without a better validation score)
class Weighting(BaseModel):
    """`strategy` names a registered weighting strategy; its parameters (e.g. gradnorm `alpha`) are validated by
    the strategy's `Config`. `temperature` (DWA) is accepted for every strategy (spec_version 1 specs carry it)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    strategy: str = "fixed"
    temperature: float = Field(2.0, gt=0.0)  # DWA temperature T

    @model_validator(mode="before")
    @classmethod
    def _params(cls, data: Any) -> Any:
        from service.ml.weighting import STRATEGIES

        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("strategy", "fixed")
        if not isinstance(name, str) or name not in STRATEGIES:
            raise SpecError([f"strategy: {_show(name)} is not allowed; allowed: {', '.join(STRATEGIES)}"])
        config = STRATEGIES[name].Config
        extra = {k: v for k, v in data.items() if k not in cls.model_fields}
        try:
            data.update(validate_part(config, extra).model_dump())
        except SpecError as exc:
            allowed = ", ".join([*cls.model_fields, *config.model_fields])
            raise SpecError([e.split("unknown field;")[0] + f"unknown field; allowed: {allowed}"
                             if "unknown field;" in e else e for e in exc.errors]) from None
        return data


BackboneName = Literal[("headwise", *BACKBONES)]  # type: ignore[valid-type]  # "headwise": the engine's own CNN


class ModelConfig(_Model):
    image_size: int = Field(64, ge=8, le=512)
    channels: Literal[1, 3] = 3
    width: int = Field(32, ge=4, le=256)  # width/depth: the "headwise" backbone only
    depth: int = Field(4, ge=1, le=8)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    head_hidden: int = Field(64, ge=1, le=4096)
    backbone: BackboneName = "headwise"
    pretrained: str | None = Field(None, min_length=1, max_length=100)  # a name in the weights store

    @model_validator(mode="after")
    def _check_pretrained(self) -> ModelConfig:
        if self.pretrained is not None and self.backbone == "headwise":
            raise SpecError([f"pretrained: needs a standard backbone ({', '.join(BACKBONES)}); "
                             "model.backbone is 'headwise'"])
        return self


class EarlyStopping(_Model):
    metric: str = Field("val_loss", min_length=1)  # "val_loss" or "<task>.<metric>"
    patience: int = Field(PATIENCE, ge=1)


def whole_or_auto(v: Any, most: int) -> Any:
    """A spec field that takes "auto" or a whole number from 1 to `most` (not a bool)."""
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= most):
        return v
    raise ValueError(f'must be "auto" or a whole number from 1 to {most}')


class Augmentation(_Model):
    hflip: bool = False
    crop: int = Field(0, ge=0, le=64)  # max random shift in pixels


class InitFrom(_Model):
    """Warm start: begin from a registered model version's trunk and the heads whose name, type, classes and
    shape match (the other heads start fresh). Name exactly one of `version` and `alias`."""

    model: str = Field(min_length=1, max_length=200, description="a registered model of the team")
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="its version number")
    alias: str | None = Field(None, min_length=1, max_length=63, description="or an alias of it (resolved when "
                                                                            "the job is created)")

    @model_validator(mode="after")
    def _one_of(self) -> InitFrom:
        if (self.version is None) == (self.alias is None):
            raise SpecError(["version: name exactly one of 'version' and 'alias'"])
        return self


class TrainingConfig(_Model):
    """Training settings. The defaults a user gets without setting anything (README "Training defaults"):
    epochs "auto" (from the dataset size, capped by the time budget), a linear learning-rate warm-up over the
    first epoch, cosine decay, early stopping on val_loss with patience 5 and the best epoch's weights kept."""

    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | Literal["auto"] = "auto"  # bounds also in the JSON schema
    max_minutes: float | None = Field(None, gt=0.0, le=10080.0)  # time budget; None: none, or AUTO_MINUTES for auto
    warmup_epochs: float = Field(1.0, ge=0.0, le=100.0)  # linear lr warm-up, per step (capped at a quarter of the run)
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, le=1.0)
    schedule: Literal["cosine", "none"] = "cosine"
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0)
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)  # false / null: off
    augmentation: Augmentation = Field(default_factory=Augmentation)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # processes (one device each) training this job with DistributedDataParallel; "auto": every visible CUDA device
    devices: int | Literal["auto"] = 1

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, v: Any) -> Any:
        return whole_or_auto(v, MAX_DEVICES)
    mixed_precision: Literal["auto", "bf16", "none"] = "auto"
    compile: bool = False
    freeze_backbone_epochs: int = Field(0, ge=0, le=10000)  # the first N epochs train the heads only
    backbone_lr_multiplier: float = Field(1.0, gt=0.0, le=10.0)  # backbone lr = learning_rate * this
    init_from: InitFrom | None = Field(None, description="warm start from a registered version (retraining when "
                                                         "new labels arrive); the new version records it as parent")

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs(cls, v: Any) -> Any:
        return whole_or_auto(v, MAX_EPOCHS)

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_stopping(cls, v: Any) -> Any:
        if v is False:
            return None  # false: train every epoch (the best epoch is still the one kept)
        return {} if v is True else v

    def planned_epochs(self, num_samples: int) -> int:
        """The epochs this config trains on `num_samples` samples at most: `epochs`, or for "auto"
        auto_epochs(num_samples) (a time budget can only lower it, after the first epoch)."""
        return auto_epochs(num_samples) if self.epochs == "auto" else int(self.epochs)

    def budget_seconds(self) -> float | None:
        """The time budget in seconds: max_minutes; for epochs "auto" without one, AUTO_MINUTES."""
        if self.max_minutes is not None:
            return 60.0 * self.max_minutes
        return 60.0 * AUTO_MINUTES if self.epochs == "auto" else None


def auto_epochs(num_samples: int) -> int:
    """epochs "auto": about AUTO_SAMPLE_VISITS sample visits in all, within [AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS]
    (small datasets get more passes, large ones at least a few)."""
    n = max(int(num_samples), 1)
    return min(max(-(-AUTO_SAMPLE_VISITS // n), AUTO_MIN_EPOCHS), AUTO_MAX_EPOCHS)
