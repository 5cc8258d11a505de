"""Per-sample losses (LOSSES registry), gating masks, masked per-head losses and task weighting strategies.

Per head: loss = sum(mask * l) / max(sum(mask), 1), where mask = own label present AND gate not known negative.
Targets at masked-out positions are replaced before the loss is computed, so garbage there (NaN, class -1)
can never turn into NaN values or NaN gradients; a head with no labelled sample gives exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.ml.spec import Spec, Task

_EPS = 1e-12


class _Registry(dict):
    def __missing__(self, key):
        raise KeyError(f"unknown loss '{key}'; valid losses: {', '.join(sorted(self))}")


def _cross_entropy(out: Tensor, target: Tensor, p) -> Tensor:
    return F.cross_entropy(out.float(), target.long(), reduction="none", label_smoothing=p.label_smoothing)


def _binary_cross_entropy(out: Tensor, target: Tensor, p) -> Tensor:
    pos_weight = getattr(p, "pos_weight", None)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32, device=out.device)
    return F.binary_cross_entropy_with_logits(out.float(), target.float(), reduction="none", pos_weight=pw)


def _focal(out: Tensor, target: Tensor, p) -> Tensor:
    """Focal loss (Lin et al. 2017). Multiclass (B, K): -(1 - p_t)^gamma * log p_t, times alpha when given.
    Binary (B,): BCE * (1 - p_t)^gamma, times alpha for positives and (1 - alpha) for negatives when given."""
    out = out.float()
    if out.dim() == 2:
        logpt = F.log_softmax(out, dim=1).gather(1, target.long()[:, None])[:, 0]  # (B,)
        loss = -((-torch.expm1(logpt)).clamp_min(_EPS) ** p.gamma) * logpt
        return loss if p.alpha is None else p.alpha * loss
    y = target.float()
    ce = F.binary_cross_entropy_with_logits(out, y, reduction="none")
    prob = torch.sigmoid(out)
    one_minus_pt = (prob * (1 - y) + (1 - prob) * y).clamp_min(_EPS)
    loss = ce * one_minus_pt**p.gamma
    if p.alpha is not None:
        loss = (p.alpha * y + (1 - p.alpha) * (1 - y)) * loss
    return loss


def _mse(out: Tensor, target: Tensor, p) -> Tensor:
    return (out.float() - target.float()) ** 2


def _mae(out: Tensor, target: Tensor, p) -> Tensor:
    return (out.float() - target.float()).abs()


def _huber(out: Tensor, target: Tensor, p) -> Tensor:
    return F.huber_loss(out.float(), target.float(), reduction="none", delta=p.delta)


# name -> fn(output, target, params) -> per-sample loss (B,); params is the spec's loss object (e.g. HuberLoss).
LOSSES: dict[str, Callable[[Tensor, Tensor, object], Tensor]] = _Registry(
    cross_entropy=_cross_entropy,
    binary_cross_entropy=_binary_cross_entropy,
    focal=_focal,
    mse=_mse,
    mae=_mae,
    huber=_huber,
)


def per_sample_loss(task: Task, output: Tensor, target: Tensor) -> Tensor:
    """The task's configured loss per sample (B,), float32. Targets must be valid everywhere."""
    return LOSSES[task.loss.type](output, target, task.loss)


# ---------------------------------------------------------------- gating
def gate_positive(spec: Spec, task: str, gate_target: Tensor) -> Tensor:
    """Bool (B,): is the gate of `task` positive given the gate task's *labels* (class index or 0/1)?
    Meaningless where the gate task is unlabelled; combine with its mask."""
    indices = spec.gate_class_indices(task)
    if indices is None:  # binary gate task: positive = true
        return gate_target.float() >= 0.5
    return torch.isin(gate_target.long(), torch.tensor(indices, device=gate_target.device))


def predicted_gate_positive(spec: Spec, task: str, gate_output: Tensor) -> Tensor:
    """Bool (B,): is the gate of `task` positive given the gate head's *output* (binary logit >= 0, i.e.
    probability >= 0.5; multiclass argmax among the gate classes)?"""
    indices = spec.gate_class_indices(task)
    if indices is None:
        return gate_output >= 0
    return torch.isin(gate_output.argmax(dim=1), torch.tensor(indices, device=gate_output.device))


def known_negative(spec: Spec, targets: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Bool (B,) per task: its gate is known negative (gate task labelled and not positive, or the gate task
    itself known negative, recursively along gate chains). All False for ungated tasks."""
    neg: dict[str, Tensor] = {}
    for name in spec.gate_order():
        gate = spec.task(name).gate
        m = masks[name]
        if gate is None:
            neg[name] = torch.zeros(m.shape, dtype=torch.bool, device=m.device)
            continue
        labelled = masks[gate.task].bool()
        neg[name] = (labelled & ~gate_positive(spec, name, targets[gate.task])) | neg[gate.task]
    return neg


def effective_masks(spec: Spec, targets: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Training mask per task (bool, B): own label present AND gate not known negative."""
    neg = known_negative(spec, targets, masks)
    return {name: masks[name].bool() & ~neg[name] for name in spec.task_names}


# ---------------------------------------------------------------- masked losses
def _safe_target(task: Task, target: Tensor, mask: Tensor, output: Tensor) -> Tensor:
    if task.type == "regression":
        return torch.where(mask, target.float(), output.detach().float())
    if task.type == "multiclass":
        return torch.where(mask, target.long(), torch.zeros_like(target, dtype=torch.long))
    return torch.where(mask, target.float(), torch.zeros_like(target, dtype=torch.float32))


def task_losses(
    spec: Spec, outputs: dict[str, Tensor], targets: dict[str, Tensor], masks: dict[str, Tensor]
) -> dict[str, tuple[Tensor, int]]:
    """{task: (masked mean loss (scalar float32 tensor), labelled count)}; gating applied via effective_masks.
    A head with count 0 gives exactly 0.0 with zero gradient. One host sync for all the counts."""
    eff = effective_masks(spec, targets, masks)
    losses = []
    for task in spec.tasks:
        m = eff[task.name]
        out = outputs[task.name]
        per = per_sample_loss(task, out, _safe_target(task, targets[task.name], m, out))  # (B,)
        per = torch.where(m, per, torch.zeros_like(per))
        losses.append(per.sum() / m.sum().clamp_min(1))
    counts = torch.stack([eff[n].sum() for n in spec.task_names]).tolist()
    return {n: (loss, int(c)) for n, loss, c in zip(spec.task_names, losses, counts, strict=True)}


# ---------------------------------------------------------------- weighting
class Weighting(nn.Module):
    """Combines per-head losses into the total. Heads with count 0 are left out entirely (no gradient reaches
    their head or their weighting parameters). Subclasses: FixedWeighting, UncertaintyWeighting, DWAWeighting."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.task_names = spec.task_names
        self.spec_weights = {t.name: t.weight for t in spec.tasks}
        self.task_types = {t.name: t.type for t in spec.tasks}

    def _term(self, name: str, loss: Tensor) -> Tensor:
        raise NotImplementedError

    def combine(self, losses: dict[str, tuple[Tensor, int]]) -> Tensor:
        """Weighted total (scalar). If no head has labels: a zero connected to the graph (backward is safe)."""
        terms = [self._term(n, loss) for n, (loss, count) in losses.items() if count > 0]
        if not terms:
            return sum(loss * 0.0 for loss, _ in losses.values())
        return torch.stack(terms).sum()

    def weights(self) -> dict[str, float]:
        """Current effective factor on each task's loss."""
        raise NotImplementedError

    def end_epoch(self, mean_train_losses: dict[str, float]) -> None:
        """Called once per epoch with the mean train loss of each task that had labels that epoch."""

    def parameters_for(self, task: str) -> list[nn.Parameter]:
        """Learned weighting parameters that belong to `task` (empty unless uncertainty weighting)."""
        return []


class FixedWeighting(Weighting):
    def _term(self, name: str, loss: Tensor) -> Tensor:
        return self.spec_weights[name] * loss

    def weights(self) -> dict[str, float]:
        return dict(self.spec_weights)


class UncertaintyWeighting(Weighting):
    """Kendall et al. 2018: learned s_k = log sigma_k^2 (init 0). Classification term exp(-s) L + s/2,
    regression term exp(-s) L / 2 + s/2; each times the spec weight."""

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.log_vars = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in self.task_names)
        self._index = {n: i for i, n in enumerate(self.task_names)}

    def _scale(self, name: str) -> float:
        return 0.5 if self.task_types[name] == "regression" else 1.0

    def _term(self, name: str, loss: Tensor) -> Tensor:
        s = self.log_vars[self._index[name]]
        return self.spec_weights[name] * (self._scale(name) * torch.exp(-s) * loss + 0.5 * s)

    def weights(self) -> dict[str, float]:
        return {
            n: self.spec_weights[n] * self._scale(n) * math.exp(-float(self.log_vars[i].detach()))
            for i, n in enumerate(self.task_names)
        }

    def parameters_for(self, task: str) -> list[nn.Parameter]:
        return [self.log_vars[self._index[task]]]


class DWAWeighting(Weighting):
    """Dynamic Weight Average (Liu et al. 2019): w_k = K exp(r_k / T) / sum_j exp(r_j / T) with
    r_k = L_k(t-1) / L_k(t-2) (mean train losses of the last two epochs in which task k had labels; r_k = 1
    until a task has two such epochs, so all weights are 1 for the first two epochs). Times the spec weight.
    The loss history and current weights are buffers, so they are in state_dict."""

    def __init__(self, spec: Spec):
        super().__init__(spec)
        k = len(self.task_names)
        self.temperature = spec.weighting.temperature
        self.register_buffer("history", torch.full((2, k), float("nan"), dtype=torch.float64))  # [t-1, t-2]
        self.register_buffer("dwa_weights", torch.ones(k, dtype=torch.float32))

    def _term(self, name: str, loss: Tensor) -> Tensor:
        w = self.dwa_weights[self.task_names.index(name)]
        return self.spec_weights[name] * w * loss

    def weights(self) -> dict[str, float]:
        return {n: self.spec_weights[n] * float(w) for n, w in zip(self.task_names, self.dwa_weights.tolist(),
                                                                   strict=True)}

    def end_epoch(self, mean_train_losses: dict[str, float]) -> None:
        hist = self.history.clone()
        for i, name in enumerate(self.task_names):
            value = mean_train_losses.get(name)
            if value is not None and math.isfinite(value):
                hist[1, i] = hist[0, i]
                hist[0, i] = value
        ratios = torch.where(hist.isnan().any(dim=0), torch.ones_like(hist[0]), hist[0] / hist[1].clamp_min(_EPS))
        w = len(self.task_names) * torch.softmax(ratios / self.temperature, dim=0)
        self.history.copy_(hist)
        self.dwa_weights.copy_(w.to(self.dwa_weights.dtype))


def make_weighting(spec: Spec) -> Weighting:
    strategies = {"fixed": FixedWeighting, "uncertainty": UncertaintyWeighting, "dwa": DWAWeighting}
    return strategies[spec.weighting.strategy](spec)
