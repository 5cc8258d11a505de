"""Data-parallel training (training.devices > 1): the hooks Run and train() call when torchrun started this
process as one of several ranks (service/ml/train/rank_main.py). One process (World.size == 1) never gets here.

Exactness: every rank holds the whole dataset and the same seeded epoch order, so every rank knows each step's
GLOBAL batch and each head's GLOBAL labelled count without communication. A rank takes every world.size-th sample
of the global batch (`shard`), computes each head's masked loss as  local_sum / global_count  (the count argument
of masked_loss) and backpropagates  world.size  times that: DistributedDataParallel AVERAGES gradients, so the
step gets exactly the gradient of the single-process masked mean over the global batch, whatever the labels'
spread across ranks (a rank without a label of a head contributes 0, never NaN). Heads with no label in the global
batch are inactive on every rank alike (their grads are cleared as in one process). Augmentation draws for the
global batch and each rank keeps its slice; BatchNorm normalises over the global batch (torch's SyncBatchNorm on
CUDA, GlobalBatchNorm below on the CPU, where SyncBatchNorm does not run). So with dropout 0 a 2-process run follows
the single-process loss trajectory up to float summation order (tests/scale/test_ddp_training.py); dropout draws
its masks per rank (statistically the same, not bit-identical).

Weighting strategies see global figures: their factors multiply the global means; their own parameters' gradients
are averaged like the network's (`sync_strategy_grads`); epoch losses are all-reduced before end_epoch (DWA).
Strategies that act on gradients with several backward passes (gradnorm, pcgrad: `multi_backward`, or any strategy
overriding Strategy.backward) are refused for devices > 1 (`spec_errors`): DDP's gradient hooks fire once per
backward. Rank 0 alone validates, writes checkpoints and reports; the early-stopping decision is broadcast.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from service.ml.distributed import World, rank_slice


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the GLOBAL batch's (all ranks), for the CPU/gloo path: the sums are
    all-reduced with the differentiable torch.distributed.nn.all_reduce, so gradients flow across ranks exactly as
    through one BatchNorm over the whole batch. Same parameters/buffers (state_dict) as nn.BatchNorm2d."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dtype, x = x.dtype, x.float()  # statistics in float32 (under bf16 autocast too, as BatchNorm's kernels)
        dims = (0, 2, 3)
        c = x.shape[1]
        # two passes, as BatchNorm computes them (E[x^2] - E[x]^2 loses digits in float32): the global mean, then
        # the global sum of squared deviations
        local_n = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        packed = all_reduce(torch.cat([x.sum(dims), local_n]))
        n = packed[-1]
        mean = packed[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n.detach() / (n.detach() - 1).clamp_min(1))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(dtype)


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d normalises over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats).to(device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            global_batchnorm(child, device)
    return module


def wrap(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """The module the training step calls: DistributedDataParallel over `model` (whose parameters it shares)."""
    ids = [device.index if device.index is not None else world.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def shard(idx: Tensor, world: World) -> Tensor:
    """This rank's samples of a global batch (every world.size-th, DistributedSampler's interleaving)."""
    return rank_slice(idx, world)


def connect_inactive(losses: dict[str, Tensor], counts: dict[str, int]) -> dict[str, Tensor]:
    """DDP needs a gradient for every parameter in each backward: fold 0 * (inactive heads' losses, each exactly 0
    by masked_loss) into the first active head's loss, so those heads get zero gradients (cleared afterwards)."""
    active = [t for t, c in counts.items() if c > 0]
    inactive = [losses[t] for t, c in counts.items() if c == 0]
    if not active or not inactive:
        return losses
    out = dict(losses)
    out[active[0]] = out[active[0]] + 0.0 * sum(inactive)
    return out


def sync_strategy_grads(params: list[nn.Parameter], world: World) -> None:
    """Average the weighting strategy's own parameters' gradients over the ranks (they are not inside DDP)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def sum_over_ranks(values: Tensor) -> Tensor:
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (early stopping)."""
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def agree_int(value: int, device: torch.device) -> int:
    """Rank 0's number, on every rank (the epochs planned under a time budget)."""
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())
