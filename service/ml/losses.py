"""Losses: one `@register_loss` per loss declares its config model, the head types it fits, its output link and
its per-sample implementation. The spec's loss schema, its error messages and GET /v1/capabilities are all
built from this registry; operators add losses as plugins (entry-point group `headwise.losses`).

A head's loss is one config or a list of them (`[{"type": "mse", "weight": 1}, {"type": "mae", "weight": 0.2}]`):
per sample, sum(weight_i * loss_i). `masked_loss` is THE masked mean used by training and validation:
sum(mask * per_sample) / max(count, 1). Targets at masked-out positions are replaced before the loss is computed
(head type's `safe_target`), so garbage there never turns into NaN values or NaN gradients.
"""

from __future__ import annotations

import importlib.metadata
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, create_model, field_validator
from torch import Tensor

from service.ml.strict import SpecError, StrictModel, validate_part

ENTRY_POINT_GROUP = "headwise.losses"
_EPS = 1e-12
LINKS = ("identity", "log")  # how a regression head's output maps to the label: value | log of the value


class LossConfig(StrictModel):
    """Base of every loss config: `type` (the registered name) and `weight` (factor within a composite loss)."""

    type: str
    weight: float = Field(1.0, ge=0.0)


@dataclass(frozen=True)
class LossEntry:
    name: str
    config: type[LossConfig]
    heads: tuple[str, ...]
    fn: Callable[[Tensor, Tensor, Any], Tensor]  # (output, target, config) -> per-sample loss (B,)
    link: str = "identity"
    plugin: str | None = None  # the distribution that registered it (None: built in)

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip().split("\n")[0]


LOSSES: dict[str, LossEntry] = {}
PLUGIN_ERRORS: list[str] = []
_plugins_loaded = False


def register_loss(name: str, *, heads: tuple[str, ...], config: type[LossConfig] = LossConfig,
                  link: str = "identity", plugin: str | None = None):
    """Decorator: register `fn(output, target, config) -> per-sample loss (B,)` as loss `name`."""
    if link not in LINKS:
        raise ValueError(f"loss '{name}': link must be one of {LINKS}")

    def decorate(fn):
        if name in LOSSES and LOSSES[name].fn is not fn:
            raise ValueError(f"loss '{name}' is already registered")
        model = create_model(f"{name.title().replace('_', '')}Loss", __base__=config,
                             type=(Literal[name], name))  # type: ignore[call-overload]
        model.__doc__ = (fn.__doc__ or "").strip().split("\n")[0]
        LOSSES[name] = LossEntry(name, model, tuple(heads), fn, link, plugin)
        return fn

    return decorate


def load_plugins() -> None:
    """Import every `headwise.losses` entry point once (each registers its losses with @register_loss). A plugin
    that fails to load is skipped with a warning and listed in PLUGIN_ERRORS (shown by /v1/capabilities)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()  # an entry point may also name a register() function
        except Exception as exc:  # a broken plugin must not take the service down
            PLUGIN_ERRORS.append(f"{ep.name} ({ep.value}): {type(exc).__name__}: {exc}")
            warnings.warn(f"loss plugin {ep.name} not loaded: {exc}", RuntimeWarning, stacklevel=2)


def registry() -> dict[str, LossEntry]:
    load_plugins()
    return LOSSES


def allowed_losses(head_type: str) -> list[str]:
    return [n for n, e in registry().items() if head_type in e.heads]


# ---------------------------------------------------------------- spec side
def parse_losses(value: Any, head_type: str) -> LossConfig | list[LossConfig]:
    """A task's `loss` (name, object or non-empty list of them) -> validated config(s). SpecError("loss...: ...")."""
    if isinstance(value, list):
        if not value:
            raise SpecError(["loss: a loss list needs at least 1 item"])
        out, errors = [], []
        for i, item in enumerate(value):
            try:
                out.append(_parse_one(item, head_type, f"loss[{i}]"))
            except SpecError as exc:
                errors += exc.errors
        links = {registry()[c.type].link for c in out}
        if not errors and len(links) > 1:
            errors.append(f"loss: the losses of one head must share an output link; got {', '.join(sorted(links))}")
        if errors:
            raise SpecError(errors)
        return out
    return _parse_one(value, head_type, "loss")


def _parse_one(value: Any, head_type: str, path: str) -> LossConfig:
    if isinstance(value, LossConfig):
        value = value.model_dump()
    if isinstance(value, str):
        value = {"type": value}
    allowed = ", ".join(allowed_losses(head_type))
    if not isinstance(value, dict):
        raise SpecError([f"{path}: must be a loss name or an object with 'type'; got {value!r}"])
    name = value.get("type")
    if name is None:
        raise SpecError([f"{path}: a loss object needs a 'type'; allowed: {allowed}"])
    entry = registry().get(name) if isinstance(name, str) else None
    if entry is None:
        raise SpecError([f"{path}: {name!r} is not a loss; allowed: {allowed}"])
    if head_type not in entry.heads:
        raise SpecError([f"{path}: '{name}' does not fit a {head_type} task; allowed: {allowed}"])
    return validate_part(entry.config, value, path)


def loss_list(task) -> list[LossConfig]:
    return list(task.loss) if isinstance(task.loss, list) else [task.loss]


def loss_link(task) -> str:
    return registry()[loss_list(task)[0].type].link


def loss_json_schema() -> dict:
    """JSON Schema of one loss object: oneOf the registered configs (the spec's `loss` is this or a list)."""
    one = {"oneOf": [_config_schema(e) for e in registry().values()]}
    return {"anyOf": [{"type": "string", "enum": list(registry())}, one, {"type": "array", "items": one,
                                                                            "minItems": 1}]}


def _config_schema(entry: LossEntry) -> dict:
    return entry.config.model_json_schema()


# ---------------------------------------------------------------- computing
def per_sample_loss(task, output: Tensor, target: Tensor) -> Tensor:
    """The task's (composite) loss per sample (B,), float32. Targets must be valid everywhere."""
    total = None
    for cfg in loss_list(task):
        term = registry()[cfg.type].fn(output.float(), target, cfg)
        term = term if cfg.weight == 1.0 else cfg.weight * term
        total = term if total is None else total + term
    return total


def masked_loss(task, head, output: Tensor, target: Tensor, mask: Tensor, count: int) -> Tensor:
    """Masked mean loss of one head: sum(mask * l) / max(count, 1). count = mask.sum() (given, so a training step
    never waits for the device). A head with count 0 gives exactly 0.0 with zero gradient."""
    per = per_sample_loss(task, output, head.safe_target(target, mask, output))
    return torch.where(mask, per, torch.zeros_like(per)).sum() / max(int(count), 1)


# ---------------------------------------------------------------- built-in losses
class CrossEntropyConfig(LossConfig):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class BCEConfig(LossConfig):
    pos_weight: float | list[float] | None = None  # a list (one per tag) for multilabel heads

    @field_validator("pos_weight")
    @classmethod
    def _positive(cls, v):
        values = v if isinstance(v, list) else [] if v is None else [v]
        if any(not x > 0 for x in values):
            raise ValueError("must be > 0")
        return v


class FocalConfig(LossConfig):
    gamma: float = Field(2.0, ge=0.0)
    alpha: float | None = Field(None, ge=0.0, le=1.0)


class HuberConfig(LossConfig):
    delta: float = Field(1.0, gt=0.0)


class SmoothL1Config(LossConfig):
    beta: float = Field(1.0, gt=0.0)


class QuantileConfig(LossConfig):
    q: float = Field(0.5, gt=0.0, lt=1.0)


def _tag_mean(loss: Tensor) -> Tensor:
    """Multilabel (B, K) element losses -> per sample (B,): mean over the tags; (B,) passes through."""
    return loss.mean(dim=1) if loss.dim() == 2 else loss


@register_loss("cross_entropy", heads=("multiclass",), config=CrossEntropyConfig)
def cross_entropy(out: Tensor, target: Tensor, p) -> Tensor:
    """Softmax cross-entropy over the classes (optional label smoothing)."""
    return F.cross_entropy(out, target.long(), reduction="none", label_smoothing=p.label_smoothing)


@register_loss("binary_cross_entropy", heads=("binary", "multilabel"), config=BCEConfig)
def binary_cross_entropy(out: Tensor, target: Tensor, p) -> Tensor:
    """Sigmoid binary cross-entropy (multilabel: one per tag, averaged); pos_weight scales the positives."""
    pw = None if p.pos_weight is None else torch.tensor(p.pos_weight, dtype=torch.float32, device=out.device)
    return _tag_mean(F.binary_cross_entropy_with_logits(out, target.float(), reduction="none", pos_weight=pw))


@register_loss("focal", heads=("multiclass", "binary", "multilabel"), config=FocalConfig)
def focal(out: Tensor, target: Tensor, p) -> Tensor:
    """Focal loss (Lin et al. 2017): (1 - p_t)^gamma times the cross-entropy, alpha-balanced when given."""
    if out.dim() == 2 and target.dim() == 1:  # multiclass (B, K) with class indices
        logpt = F.log_softmax(out, dim=1).gather(1, target.long()[:, None])[:, 0]  # (B,)
        loss = -((-torch.expm1(logpt)).clamp_min(_EPS) ** p.gamma) * logpt
        return loss if p.alpha is None else p.alpha * loss
    y = target.float()
    ce = F.binary_cross_entropy_with_logits(out, y, reduction="none")
    prob = torch.sigmoid(out)
    loss = ce * (prob * (1 - y) + (1 - prob) * y).clamp_min(_EPS) ** p.gamma
    if p.alpha is not None:
        loss = (p.alpha * y + (1 - p.alpha) * (1 - y)) * loss
    return _tag_mean(loss)


@register_loss("mse", heads=("regression",))
def mse(out: Tensor, target: Tensor, p) -> Tensor:
    """Squared error."""
    return (out - target.float()) ** 2


@register_loss("mae", heads=("regression",))
def mae(out: Tensor, target: Tensor, p) -> Tensor:
    """Absolute error."""
    return (out - target.float()).abs()


@register_loss("huber", heads=("regression",), config=HuberConfig)
def huber(out: Tensor, target: Tensor, p) -> Tensor:
    """Huber loss: squared within delta, linear beyond (0.5 d^2 | delta (|d| - delta / 2))."""
    return F.huber_loss(out, target.float(), reduction="none", delta=p.delta)


@register_loss("smooth_l1", heads=("regression",), config=SmoothL1Config)
def smooth_l1(out: Tensor, target: Tensor, p) -> Tensor:
    """Smooth L1: 0.5 d^2 / beta within beta, |d| - beta / 2 beyond."""
    return F.smooth_l1_loss(out, target.float(), reduction="none", beta=p.beta)


@register_loss("log_cosh", heads=("regression",))
def log_cosh(out: Tensor, target: Tensor, p) -> Tensor:
    """log(cosh(d)), computed stably as |d| + softplus(-2|d|) - log 2."""
    d = (out - target.float()).abs()
    return d + F.softplus(-2.0 * d) - math.log(2.0)


@register_loss("quantile", heads=("regression",), config=QuantileConfig)
def quantile(out: Tensor, target: Tensor, p) -> Tensor:
    """Pinball loss for quantile q: max(q d, (q - 1) d) with d = target - output."""
    d = target.float() - out
    return torch.maximum(p.q * d, (p.q - 1.0) * d)


@register_loss("poisson", heads=("regression",), link="log")
def poisson(out: Tensor, target: Tensor, p) -> Tensor:
    """Poisson negative log-likelihood for counts; the head outputs the log-rate: exp(out) - y out."""
    return torch.exp(out) - target.float() * out


def task_losses(spec, outputs: dict[str, Tensor], targets: dict[str, Tensor], masks: dict[str, Tensor]
                ) -> dict[str, tuple[Tensor, int]]:
    """{task: (masked mean loss, labelled count)} for whole tensors; `masks` are the effective masks
    (service.ml.gating.effective_masks applies the gates)."""
    out = {}
    for t in spec.tasks:
        m = masks[t.name].bool()
        count = int(m.sum())
        out[t.name] = (masked_loss(t, t.head, outputs[t.name], targets[t.name], m, count), count)
    return out
