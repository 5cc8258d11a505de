"""uncertainty (Kendall et al. 2018): learned s_k = log sigma_k^2 (init 0) per head; term
w_k (c_k exp(-s_k) L_k + s_k / 2) with c_k the head type's scale (1 classification, 1/2 regression).
s_k is projected into [-LOG_VAR_LIMIT, LOG_VAR_LIMIT] after every step, so a head whose loss tends to 0 cannot
drive exp(-s) to infinity."""

from __future__ import annotations

import math

import torch
from torch import nn

from service.ml.weighting import register_strategy
from service.ml.weighting.base import Strategy

LOG_VAR_LIMIT = 6.0  # exp(6) ~ 403: weights stay within [0.0025, 403] times the scale


@register_strategy
class Uncertainty(Strategy):
    name = "uncertainty"
    paper = "Kendall, Gal, Cipolla 2018"

    def __init__(self, spec):
        super().__init__(spec)
        self.log_vars = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in self.task_names)
        self._index = {n: i for i, n in enumerate(self.task_names)}

    def _scale(self, name: str) -> float:
        return self.heads[name].uncertainty_scale

    def factors(self, active):
        return {n: self.spec_weights[n] * self._scale(n) * torch.exp(-self.log_vars[self._index[n]])
                for n in active}

    def regulariser(self, active):
        return sum(self.spec_weights[n] * 0.5 * self.log_vars[self._index[n]] for n in active)

    @torch.no_grad()
    def after_step(self) -> None:
        for s in self.log_vars:
            s.clamp_(-LOG_VAR_LIMIT, LOG_VAR_LIMIT)

    def weights(self):
        return {n: self.spec_weights[n] * self._scale(n) * math.exp(-float(self.log_vars[i].detach()))
                for i, n in enumerate(self.task_names)}

    def parameters_for(self, task):
        return [self.log_vars[self._index[task]]]
