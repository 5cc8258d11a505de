"""MultiTaskCNN: a residual conv trunk shared by every task, plus one small head per task."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from service.ml.backbones import BACKBONES, build_trunk
from service.ml.spec import Spec

PIXEL_MEAN = 0.5  # inputs in [0, 1] are normalised inside the network: (x - mean) / std
PIXEL_STD = 0.25


class ResidualBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus a (1x1 conv + BN when the shape changes) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class MultiTaskCNN(nn.Module):
    """Shared trunk + one head per task (in spec order).

    Trunk: stem conv3x3 (stride 2 when image_size >= 64, else 1) -> BN -> ReLU, then `depth` residual blocks;
    every second block (index 1, 3, ...) downsamples with stride 2 and doubles the channels (capped at width*4);
    global average pool; dropout. Heads: Linear -> ReLU -> Dropout -> Linear, no BatchNorm (a head that sees
    no labels keeps no running statistics that could drift).

    forward(x): x float (B, C, H, W) in [0, 1] (any memory format, channels_last friendly) ->
    {task: (B, K) for vector heads (multiclass logits, multilabel tag logits) | (B,) binary logit / regression
    value in standardised units}.
    """

    def __init__(self, spec: Spec):
        super().__init__()
        cfg = spec.model
        self.task_names = spec.task_names
        self.vector = {t.name: t.head.vector_output for t in spec.tasks}
        self._index = {name: i for i, name in enumerate(self.task_names)}
        self.backbone: nn.Module | None = None
        if cfg.backbone == "headwise":
            cin = self._headwise_trunk(cfg)
        else:  # a standard architecture in torchvision's names under "backbone."; ImageNet normalisation,
            # stored in the weights (persistent buffers) so the artifact and its ONNX graph carry it
            info = BACKBONES[cfg.backbone]
            self.register_buffer("pixel_mean", torch.tensor(info.mean).view(1, 3, 1, 1))
            self.register_buffer("pixel_std", torch.tensor(info.std).view(1, 3, 1, 1))
            self.backbone = build_trunk(cfg.backbone)
            cin = info.feature_dim
        self.feature_dim = cin
        self.dropout = nn.Dropout(cfg.dropout)
        # A ModuleList (not ModuleDict) so that any task name works, even one like "type" or "training".
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(cin, cfg.head_hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.head_hidden, t.num_outputs),
            )
            for t in spec.tasks
        )
        self._init_weights()

    def _headwise_trunk(self, cfg) -> int:
        stem_stride = 2 if cfg.image_size >= 64 else 1
        self.register_buffer("pixel_mean", torch.full((1, cfg.channels, 1, 1), PIXEL_MEAN), persistent=False)
        self.register_buffer("pixel_std", torch.full((1, cfg.channels, 1, 1), PIXEL_STD), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.channels, cfg.width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(cfg.width),
            nn.ReLU(inplace=True),
        )
        blocks, cin = [], cfg.width
        for i in range(cfg.depth):
            stride = 2 if i % 2 == 1 else 1
            cout = min(cin * 2, cfg.width * 4) if stride == 2 else cin
            blocks.append(ResidualBlock(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        return cin

    def _init_weights(self) -> None:
        # a standard backbone keeps its own (torchvision's) initialisation
        for m in (self.heads.modules() if self.backbone is not None else self.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # The residual blocks' last BatchNorm weight starts at 1 like every BatchNorm (no zero-init "identity
        # start", which is meant for deep large-batch ResNets): on this small trunk zero-init cost 2.4 points of
        # digit accuracy and 2.8 on a 15%-labelled binary head over 20 epochs (bench/quality_peer.py, 3 seeds).
        for head in self.heads:
            nn.init.normal_(head[-1].weight, std=0.01)  # start near 0 logits / the mean (standardised) value

    def features(self, x: Tensor) -> Tensor:
        """Pooled trunk features (B, feature_dim), before dropout."""
        if self.backbone is not None:
            if x.shape[1] == 1:  # grey images: the 3 channels a standard backbone expects
                x = x.expand(-1, 3, -1, -1)
            return self.backbone((x - self.pixel_mean) / self.pixel_std)
        x = (x - self.pixel_mean) / self.pixel_std
        x = self.blocks(self.stem(x))
        return x.mean(dim=(2, 3))  # (B, C)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.dropout(self.features(x))
        out = {}
        for name, head in zip(self.task_names, self.heads, strict=True):
            y = head(z)  # (B, K) or (B, 1)
            out[name] = y if self.vector[name] else y[:, 0]
        return out

    def head(self, task: str) -> nn.Module:
        if task not in self._index:
            raise KeyError(f"'{task}' is not a task; tasks are: {', '.join(self.task_names)}")
        return self.heads[self._index[task]]

    def head_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.head(task).parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer with weights (GradNorm's W): the last residual block's final BatchNorm affine
        (the block's residual branch ends in it, so the BN parameters carry the branch's gradient).
        A standard backbone: its last BatchNorm (ResNet: the last block's bn2/bn3; MobileNetV3: the last conv's)."""
        if self.backbone is not None:
            return list([m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)][-1].parameters())
        return list(self.blocks[-1].bn2.parameters())

    def trunk(self) -> nn.Module:
        """The shared feature extractor (everything but the heads)."""
        return self.backbone if self.backbone is not None else nn.ModuleList([self.stem, self.blocks])

    def trunk_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk().parameters())
