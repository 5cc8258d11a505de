"""pcgrad, gradient surgery (Yu et al., NeurIPS 2020), Algorithm 1.

Per step, for the heads with labels in the batch: g_i = grad of (spec weight * L_i) w.r.t. the shared (trunk)
parameters. For each i, in a random order over the other tasks j: if g_i^PC . g_j < 0, then
g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j (projection onto the normal plane of the original g_j). The shared
parameters get sum_i g_i^PC; every head keeps the gradient of its own loss. The random order comes from the
strategy's own generator (seeded by training.seed, saved in checkpoints), so resume stays bit-identical.
Same projection as LibMTL's PCGrad (which also projects against the original g_j)."""

from __future__ import annotations

import torch

from service.ml.weighting import register_strategy
from service.ml.weighting.base import Strategy


def project_conflicting(grads: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """grads (A, D) per-task gradients -> sum of the projected gradients (D,)."""
    pc = grads.clone()
    n = grads.shape[0]
    for i in range(n):
        for j in torch.randperm(n, generator=gen).tolist():
            if j == i:
                continue
            dot = torch.dot(pc[i], grads[j])
            if dot < 0:
                pc[i] -= dot / torch.dot(grads[j], grads[j]) * grads[j]
    return pc.sum(dim=0)


@register_strategy
class PCGrad(Strategy):
    name = "pcgrad"
    multi_backward = True
    paper = "Yu et al. 2020"

    def __init__(self, spec):
        super().__init__(spec)
        self.gen = torch.Generator().manual_seed(spec.training.seed)

    def backward(self, task_losses, counts, shared_params):
        active = self.active(task_losses, counts)
        if len(active) < 2:
            return super().backward(task_losses, counts, shared_params)
        params = [p for p in shared_params if p.requires_grad]
        losses = [self.spec_weights[n] * task_losses[n] for n in active]
        flat = []
        for loss in losses:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            flat.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float()
                                   for p, g in zip(params, grads, strict=True)]))
        merged = project_conflicting(torch.stack(flat), self.gen)
        total = sum(losses)
        total.backward()  # heads: their own gradients; the shared ones are replaced below
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = merged[offset : offset + n].view_as(p).to(p.dtype).clone()
            offset += n
        return total.detach()

    def get_extra_state(self):
        return {"generator": self.gen.get_state()}

    def set_extra_state(self, state):
        self.gen.set_state(state["generator"])
