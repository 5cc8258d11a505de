"""Optimiser and schedule. As nanoGPT's configure_optimizers: weight decay only on parameters with >= 2 dims
(conv and linear weights); biases and normalisation parameters (and strategy parameters) get none."""

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


def make_scheduler(opt: torch.optim.Optimizer, tc) -> torch.optim.lr_scheduler.LambdaLR:
    epochs, cosine = tc.epochs, tc.schedule == "cosine"
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 0.5 * (1.0 + math.cos(math.pi * e / epochs)) if cosine else 1.0)
