"""Several processes per job (torchrun + DistributedDataParallel): the pieces the training loop needs, torch only.

Masked per-head losses stay EXACT across ranks. Each rank holds a different slice of the batch, so a sparse head
may have 3 labelled samples on one rank and none on another; averaging per-rank means (what plain DDP would do)
weights those samples wrongly. Instead every rank all-reduces each head's (loss sum, labelled count) and
backpropagates  world * local_sum / global_count : DDP then AVERAGES gradients over the world, which gives
exactly the gradient of  global_sum / global_count , the single-process masked mean over the whole batch. A head
with no label on any rank contributes  0 * local_sum : a zero gradient (its parameters do not move) while keeping
the graph connected, so DDP never waits for a missing gradient. Weighting strategies get the global means.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

MAX_DEVICES = 64


def spec_errors(spec) -> list[str]:
    """Why this spec cannot train on several processes ([] when it can, or when devices is 1)."""
    from service.ml.weighting import STRATEGIES
    from service.ml.weighting.base import Strategy

    devices = spec.training.devices
    if devices == 1:
        return []
    errors = []
    name = spec.weighting.strategy
    cls = STRATEGIES.get(name)
    if cls is not None and (cls.multi_backward or cls.backward is not Strategy.backward):
        allowed = sorted(n for n, c in STRATEGIES.items() if not c.multi_backward and c.backward is Strategy.backward)
        errors.append(f"weighting.strategy: '{name}' acts on per-task gradients and cannot run with "
                      f"training.devices={devices}; with several devices use one of: {', '.join(allowed)} "
                      "(or training.devices: 1)")
    if spec.training.compile:
        errors.append(f"training.compile: not supported with training.devices={devices} yet; set compile: false "
                      "or devices: 1")
    if isinstance(devices, int) and spec.training.batch_size < 2 * devices:
        errors.append(f"training.batch_size: {spec.training.batch_size} is split over training.devices={devices} "
                      f"processes; it must be at least {2 * devices} (2 samples per process)")
    return errors


def resolve_devices(requested, device_type: str, available: int) -> int:
    """training.devices -> the number of processes: "auto" = every visible CUDA device (1 on the CPU). ValueError
    naming the field when this machine has fewer (available: CUDA devices, or CPU cores)."""
    if requested == "auto":
        return max(available, 1) if device_type == "cuda" else 1
    if requested > available:
        what = "CUDA device(s)" if device_type == "cuda" else "CPU core(s)"
        raise ValueError(f"training.devices: {requested} processes requested but this worker has {available} "
                         f"{what}; use at most {available} or \"auto\"")
    return int(requested)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (a single process without them)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: str = "cpu") -> World:
    """Join the process group torchrun set up: NCCL for CUDA devices, gloo on the CPU. No-op for one process."""
    world = world_from_env()
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend=backend)
    return world


def leave(code: int = 0) -> NoReturn:
    """End this rank's process now: leave the process group, flush, then `os._exit` (no interpreter shutdown).

    With gloo (torch 2.13), a process that exits normally even after destroy_process_group() is sometimes aborted
    while Python tears down (std::terminate: "terminate called without an active exception", SIGABRT): 5 of 26
    runs of tests/scale/test_distributed.py's two-rank script here. torchrun then reports the rank failed although
    its work was done. Skipping the teardown ended it: 30 runs of 30 clean."""
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def rank_slice(indices, world: World):
    """This rank's share of an epoch's (already shuffled, identically seeded) sample order: every world.size-th."""
    return indices[world.rank::world.size]


def global_masked_loss(loss_sums: torch.Tensor, counts: torch.Tensor, world: World
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loss_sums (H,) with grad: each head's summed loss over this rank's LABELLED samples; counts (H,): how many.

    Returns (to_backward (H,), global_mean (H,) detached, global_count (H,)): sum to_backward (after weighting)
    and call backward(); global_mean is the exact single-process masked mean (0 where global_count is 0)."""
    counts = counts.to(loss_sums.dtype)
    if world.distributed:
        packed = torch.cat([loss_sums.detach(), counts]).clone()
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        global_sums, global_counts = packed[: len(counts)], packed[len(counts):]
    else:
        global_sums, global_counts = loss_sums.detach(), counts
    labelled = global_counts > 0
    safe = torch.where(labelled, global_counts, torch.ones_like(global_counts))
    scale = torch.where(labelled, world.size / safe, torch.zeros_like(safe))
    return loss_sums * scale, torch.where(labelled, global_sums / safe, torch.zeros_like(safe)), global_counts


def all_reduce_mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """The world's mean of a metric tensor (e.g. per-head figures a weighting strategy reads)."""
    if not world.distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world.size
