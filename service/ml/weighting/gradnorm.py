"""gradnorm, GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018), as in the paper's Algorithm 1.

Per step, over the heads with labels in the batch (the active set A; with spec weights folded into L_i):
  G_i = ||grad_W (w_i L_i)|| = w_i ||grad_W L_i||  with W the last shared layer (model.last_shared_parameters()),
  r_i = (L_i / L_i(0)) / mean_A (L_j / L_j(0))      L_i(0): the head's loss at its first labelled step,
  L_grad = sum_A |G_i - const(mean_A(G) r_i^alpha)| (the target is a constant, as in the paper),
the network is trained on sum_A w_i L_i (weights of step t), and the weights by their own Adam optimiser on
dL_grad/dw_i = sign(G_i - target_i) ||grad_W L_i||; then the active weights are renormalised so that
sum w = number of tasks (active ones keep their previous share of it: inactive weights do not move).
Differences from LibMTL's GradNorm (checked): LibMTL parametrises w = T softmax(s) and uses the gradient w.r.t.
all shared parameters and the first epoch's mean loss as L(0), starting at epoch 2; we follow the paper."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from service.ml.strict import StrictModel
from service.ml.weighting import register_strategy
from service.ml.weighting.base import Strategy

MIN_WEIGHT = 1e-6


class GradNormConfig(StrictModel):
    alpha: float = Field(1.5, ge=0.0)  # asymmetry: strength of the pull towards a common training rate
    weight_lr: float = Field(0.025, gt=0.0)  # learning rate of the weights' own Adam optimiser


@register_strategy
class GradNorm(Strategy):
    name = "gradnorm"
    Config = GradNormConfig
    multi_backward = True
    paper = "Chen et al. 2018"

    def __init__(self, spec):
        super().__init__(spec)
        k = len(self.task_names)
        self.task_weights = nn.ParameterList(nn.Parameter(torch.ones(())) for _ in range(k))
        self.register_buffer("initial_losses", torch.full((k,), float("nan")))
        self._index = {n: i for i, n in enumerate(self.task_names)}
        self.opt = torch.optim.Adam(list(self.task_weights), lr=spec.weighting.weight_lr)
        self.alpha = spec.weighting.alpha
        self.layer: list[nn.Parameter] | None = None
        self._pending: list[int] = []

    def bind(self, model):
        self.layer = list(model.last_shared_parameters())

    def factors(self, active):
        return {n: self.spec_weights[n] * self.task_weights[self._index[n]].detach() for n in active}

    def backward(self, task_losses, counts, shared_params):
        active = self.active(task_losses, counts)
        self._pending = []
        if not active:
            return super().backward(task_losses, counts, shared_params)
        idx = [self._index[n] for n in active]
        losses = [self.spec_weights[n] * task_losses[n] for n in active]
        layer = self.layer if self.layer is not None else list(shared_params)[-1:]
        for i, loss in zip(idx, losses, strict=True):
            if math.isnan(float(self.initial_losses[i])):
                self.initial_losses[i] = loss.detach()
        norms = torch.stack([_norm(torch.autograd.grad(loss, layer, retain_graph=True, allow_unused=True))
                             for loss in losses])  # ||grad_W L_i||, (A,)
        w = torch.stack([self.task_weights[i].detach() for i in idx])
        g = w * norms
        ratio = torch.stack([loss.detach() for loss in losses]) / self.initial_losses[idx].clamp_min(1e-12)
        target = g.mean() * (ratio / ratio.mean()) ** self.alpha
        for i, dw in zip(idx, torch.sign(g - target) * norms, strict=True):
            self.task_weights[i].grad = dw.reshape(())
        total = sum(wi * loss for wi, loss in zip(w, losses, strict=True))
        total.backward()
        self._pending = idx
        return total.detach()

    @torch.no_grad()
    def after_step(self):
        if not self._pending:
            return
        before = sum(float(self.task_weights[i].detach()) for i in self._pending)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        after = [self.task_weights[i].clamp_(min=MIN_WEIGHT) for i in self._pending]
        scale = before / float(sum(after))
        for p in after:
            p.mul_(scale)
        self._pending = []

    def weights(self):
        return {n: self.spec_weights[n] * float(self.task_weights[i].detach()) for n, i in self._index.items()}

    def optimizer_parameters(self):
        return []

    def get_extra_state(self):
        return {"optimizer": self.opt.state_dict()}

    def set_extra_state(self, state):
        self.opt.load_state_dict(state["optimizer"])


def _norm(grads) -> torch.Tensor:
    parts = [g.reshape(-1) for g in grads if g is not None]
    return torch.linalg.vector_norm(torch.cat(parts)).detach() if parts else torch.zeros(())
