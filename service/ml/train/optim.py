"""Optimiser and schedule. As nanoGPT's configure_optimizers: weight decay only on parameters with >= 2 dims
(conv and linear weights); biases and normalisation parameters (and strategy parameters) get none. The schedule
sets the learning rate of every step (warm-up, then cosine)."""

from __future__ import annotations

import math

import torch

from service.ml.backbones.finetune import split_trunk_groups


def param_groups(model: torch.nn.Module, extra: list, weight_decay: float) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if extra:
        groups.append({"params": list(extra), "weight_decay": 0.0})
    return groups


def make_optimizer(model: torch.nn.Module, extra: list, tc, cuda: bool) -> torch.optim.Optimizer:
    groups = param_groups(model, extra, tc.weight_decay)
    groups = split_trunk_groups(groups, model.trunk_parameters(), tc.learning_rate, tc.backbone_lr_multiplier)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=tc.learning_rate, fused=cuda or None)
    return torch.optim.SGD(groups, lr=tc.learning_rate, momentum=tc.momentum)


def warmup_steps(warmup_epochs: float, epochs: int, steps_per_epoch: int) -> int:
    """Warm-up length in steps: `warmup_epochs` epochs, at most a quarter of the planned run."""
    return int(round(min(warmup_epochs, epochs / 4) * steps_per_epoch))


class Schedule:
    """The learning rate of every step: group base lr x cosine factor of the epoch x linear warm-up factor.

    cosine (per epoch, as engine v2): 0.5 * (1 + cos(pi * epoch / epochs)); "none": 1.
    warm-up (per step): (k + 1) / W for the run's k-th step (k = epoch * steps_per_epoch + step) while k < W.
    Everything is a function of (epoch, step) and `epochs`, which the trainer may lower once, after the first epoch
    (epochs "auto" under a time budget) and keeps in the checkpoint: a resumed run sets exactly the same rates.
    """

    def __init__(self, opt: torch.optim.Optimizer, tc, epochs: int, steps_per_epoch: int):
        self.opt, self.cosine, self.epochs, self.steps_per_epoch = opt, tc.schedule == "cosine", epochs, steps_per_epoch
        self.warmup = warmup_steps(tc.warmup_epochs, epochs, steps_per_epoch)
        for g in opt.param_groups:
            g.setdefault("base_lr", g["lr"])

    def factor(self, epoch: int, step: int) -> float:
        f = 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs)) if self.cosine else 1.0
        k = epoch * self.steps_per_epoch + step
        return f * (k + 1) / self.warmup if k < self.warmup else f

    def apply(self, epoch: int, step: int) -> float:
        """Set every group's lr for this step -> the first group's lr."""
        f = self.factor(epoch, step)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * f
        return self.opt.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "warmup": self.warmup, "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.warmup, self.steps_per_epoch = state["epochs"], state["warmup"], state["steps_per_epoch"]
