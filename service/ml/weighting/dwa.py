"""dwa, Dynamic Weight Average (Liu et al. 2019): w_k = K exp(r_k / T) / sum_j exp(r_j / T) with
r_k = L_k(t-1) / L_k(t-2) (mean train losses of the last two epochs in which task k had labels; r_k = 1 until a
task has two such epochs). Times the spec weight. History and weights are buffers (in state_dict)."""

from __future__ import annotations

import math

import torch

from service.ml.weighting import register_strategy
from service.ml.weighting.base import Strategy


@register_strategy
class DWA(Strategy):
    name = "dwa"
    paper = "Liu, Johns, Davison 2019"

    def __init__(self, spec):
        super().__init__(spec)
        k = len(self.task_names)
        self.temperature = spec.weighting.temperature
        self.register_buffer("history", torch.full((2, k), float("nan"), dtype=torch.float64))  # [t-1, t-2]
        self.register_buffer("dwa_weights", torch.ones(k, dtype=torch.float32))

    def factors(self, active):
        return {n: self.spec_weights[n] * self.dwa_weights[self.task_names.index(n)] for n in active}

    def weights(self):
        return {n: self.spec_weights[n] * float(w)
                for n, w in zip(self.task_names, self.dwa_weights.tolist(), strict=True)}

    def end_epoch(self, mean_train_losses):
        hist = self.history.clone()
        for i, name in enumerate(self.task_names):
            value = mean_train_losses.get(name)
            if value is not None and math.isfinite(value):
                hist[1, i] = hist[0, i]
                hist[0, i] = value
        ratios = torch.where(hist.isnan().any(dim=0), torch.ones_like(hist[0]), hist[0] / hist[1].clamp_min(1e-12))
        w = len(self.task_names) * torch.softmax(ratios / self.temperature, dim=0)
        self.history.copy_(hist)
        self.dwa_weights.copy_(w.to(self.dwa_weights.dtype))
