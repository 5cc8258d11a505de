"""Fine-tuning controls for the trainer: a learning-rate multiplier for the trunk, and freezing the trunk for
the first `training.freeze_backbone_epochs` epochs (heads train first).

While frozen, the trunk's BatchNorm layers stay in eval mode (running statistics neither used from the batch nor
updated) and its parameters get `.grad = None` after backward, so AdamW/SGD skip them entirely (no step, no
momentum, no weight decay). Gradients still flow through the trunk during backward, so every weighting strategy
(GradNorm, PCGrad, ... which look at trunk gradients) works unchanged. Whether an epoch is frozen depends only on
its index, so a resumed run freezes exactly as an uninterrupted one.
"""

from __future__ import annotations

from torch import nn


def is_frozen(epoch: int, freeze_epochs: int) -> bool:
    """Epoch `epoch` (0-based) trains the heads only."""
    return epoch < freeze_epochs


def split_trunk_groups(groups: list[dict], trunk: list[nn.Parameter], lr: float, multiplier: float) -> list[dict]:
    """Optimiser parameter groups with every trunk parameter moved to a copy of its group whose lr is
    lr * multiplier (schedulers scale each group's initial lr, so the ratio holds all along)."""
    if multiplier == 1.0:
        return groups
    ids = {id(p) for p in trunk}
    out = []
    for g in groups:
        rest = [p for p in g["params"] if id(p) not in ids]
        mine = [p for p in g["params"] if id(p) in ids]
        if rest:
            out.append({**g, "params": rest})
        if mine:
            out.append({**g, "params": mine, "lr": lr * multiplier})
    return out


def hold_frozen(trunk: nn.Module) -> None:
    """Call after model.train() in a frozen epoch: the trunk's BatchNorm layers go back to eval mode."""
    for m in trunk.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def drop_grads(params: list[nn.Parameter]) -> None:
    """Call between backward and the optimiser step in a frozen epoch."""
    for p in params:
        p.grad = None
