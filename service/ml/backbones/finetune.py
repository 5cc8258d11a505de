"""Fine-tuning controls for the trainer: a learning-rate multiplier for the trunk, and freezing the trunk for
the first `training.freeze_backbone_epochs` epochs (heads train first).

While frozen, the trunk's BatchNorm layers stay in eval mode (running statistics neither used from the batch nor
updated) and its parameters get `.grad = None` after backward, so AdamW/SGD skip them entirely (no step, no
momentum, no weight decay). Gradients still flow through the trunk during backward, so every weighting strategy
(GradNorm, PCGrad, ... which look at trunk gradients) works unchanged. Whether an epoch is frozen depends only on
its index, so a resumed run freezes exactly as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

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


def load_backbone(model: nn.Module, spec, weights_dir: Path | None) -> dict | None:
    """Load `model.pretrained` from the weights store into the network's backbone (strict, sha256-checked);
    returns what the artifact records about it, or None when the spec names no pretrained weights."""
    from service.ml.weights import load_pretrained

    name = spec.model.pretrained
    if name is None:
        return None
    info = load_pretrained(model.backbone, weights_dir, name, spec.model.backbone)
    return {"name": info.name, "arch": info.arch, "sha256": info.sha256, "source": info.source,
            "source_sha256": info.source_sha256}


def describe(spec, pretrained: dict | None) -> dict:
    """meta.json "backbone": the architecture, the pretrained entry it started from, and the input normalisation
    the network applies to images scaled to [0, 1] (inside the network and its ONNX graph)."""
    from service.ml.backbones import BACKBONES

    arch, channels = spec.model.backbone, spec.model.channels
    if arch == "headwise":
        from service.ml.network import PIXEL_MEAN, PIXEL_STD

        mean, std = [PIXEL_MEAN] * channels, [PIXEL_STD] * channels
    else:
        mean, std = list(BACKBONES[arch].mean), list(BACKBONES[arch].std)
    return {"arch": arch, "pretrained": pretrained,
            "input_normalization": {"mean": mean, "std": std, "grey_to_rgb": arch != "headwise" and channels == 1}}
