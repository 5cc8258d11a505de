"""Standard image backbones in torchvision's layout, as trunks for the multi-task network.

A *trunk* maps normalised images (B, 3, H, W) to pooled features (B, feature_dim). `BACKBONES` lists the
architectures; "headwise" (the engine's own residual CNN) is not listed here: the network builds it itself.

    trunk = build_trunk("resnet18")                 # no classifier; state dict = torchvision's minus fc.*
    full = build_reference("resnet18", 1000)        # torchvision's full network, for strict checkpoint checks
    footprint("resnet50", 224)                      # parameters and activation bytes per sample (memory guards)

This module is the catalogue and imports no torch (the API validates specs without loading torch); the networks
are imported when first built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    name: str
    builder: str  # "module:function" in this package; function(num_classes=None) -> trunk, K -> full network
    feature_dim: int
    classifier_prefix: str  # state-dict prefix of the classification layer(s) the trunk leaves out
    description: str
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the normalisation pretrained weights expect
    std: tuple[float, float, float] = IMAGENET_STD

    def build(self, num_classes: int | None = None) -> nn.Module:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)(num_classes)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("resnet18", "resnet:resnet18", 512, "fc.", "ResNet-18 (11.2M trunk parameters), torchvision layout"),
        Backbone("resnet34", "resnet:resnet34", 512, "fc.", "ResNet-34 (21.3M trunk parameters), torchvision layout"),
        Backbone("resnet50", "resnet:resnet50", 2048, "fc.", "ResNet-50 (23.5M trunk parameters), torchvision layout"),
        Backbone("mobilenet_v3_large", "mobilenet:mobilenet_v3_large", 960, "classifier.",
                 "MobileNetV3-Large (3.0M trunk parameters), torchvision layout"),
    )
}


def catalogue() -> list[dict]:
    """What GET /v1/capabilities lists: "headwise" (the default) and every standard architecture."""
    out = [{"name": "headwise", "default": True, "feature_dim": None, "pretrainable": False,
            "input_normalization": None, "description": "the engine's residual CNN (model.width, model.depth)"}]
    out += [{"name": b.name, "default": False, "feature_dim": b.feature_dim, "pretrainable": True,
             "input_normalization": {"mean": list(b.mean), "std": list(b.std)}, "description": b.description}
            for b in BACKBONES.values()]
    return out


class UnknownBackboneError(ValueError):
    pass


def get_backbone(arch: str) -> Backbone:
    if arch not in BACKBONES:
        raise UnknownBackboneError(f"'{arch}' is not a backbone; allowed: {', '.join(BACKBONES)}")
    return BACKBONES[arch]


def build_trunk(arch: str) -> nn.Module:
    """The architecture without its classifier; forward(x normalised (B, 3, H, W)) -> (B, feature_dim)."""
    return get_backbone(arch).build(None)


def build_reference(arch: str, num_classes: int) -> nn.Module:
    """The full torchvision network (trunk + classifier with `num_classes` outputs)."""
    return get_backbone(arch).build(num_classes)


@dataclass(frozen=True)
class Footprint:
    parameters: int  # trunk parameters
    activation_elements_per_sample: int  # elements of every leaf-module output for one image (training keeps
    # most of them for backward); bytes = elements * element size (4 for float32, 2 for bf16)

    def activation_bytes_per_sample(self, element_bytes: int = 4) -> int:
        return self.activation_elements_per_sample * element_bytes


def footprint(arch: str, image_size: int) -> Footprint:
    """Parameter count and activation size of a trunk at `image_size` x `image_size`, computed on the meta
    device (no memory, no compute)."""
    import torch

    with torch.device("meta"):
        trunk = build_trunk(arch)
    total = 0

    def count(_module: object, _inputs: object, output: object) -> None:
        nonlocal total
        total += output.numel()

    hooks = [m.register_forward_hook(count) for m in trunk.modules() if not list(m.children())]
    try:
        trunk(torch.empty(1, 3, image_size, image_size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return Footprint(sum(p.numel() for p in trunk.parameters()), total)
