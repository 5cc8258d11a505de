"""Training data on the device: uint8 images (gathered per batch, augmented on the device) and one target tensor
plus one effective mask per head (shape per head type: (N,) or (N, K)); no packed (N, T) matrix."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def augment(x: Tensor, hflip: bool, crop: int, gen: torch.Generator) -> Tensor:
    """Per-sample random horizontal flip and shift by up to `crop` px (zero padding) as one gather.
    x: (B, H, W, C) uint8 on any device -> same shape."""
    b, h, w, _ = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).expand(b, h)  # (B, H)
    cols = torch.arange(w, device=dev).expand(b, w)  # (B, W)
    if hflip:
        flip = torch.rand(b, 1, generator=gen, device=dev) < 0.5
        cols = torch.where(flip, w - 1 - cols, cols)
    valid = None
    if crop:
        rows = rows + torch.randint(-crop, crop + 1, (b, 1), generator=gen, device=dev)
        cols = cols + torch.randint(-crop, crop + 1, (b, 1), generator=gen, device=dev)
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    out = x[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out * valid[..., None] if valid is not None else out


def batch_bounds(count: int, batch_size: int, min_last: int = 2) -> list[tuple[int, int]]:
    """Batches of batch_size; a last batch under min_last samples joins the one before (the trainer passes
    service.ml.precision.min_last_batch: BatchNorm cannot train on one sample, no process may get an empty share,
    and no CPU step runs under MIN_CPU_BATCH samples per process)."""
    bounds = [(s, min(s + batch_size, count)) for s in range(0, count, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        bounds[-2:] = [(bounds[-2][0], count)]
    return bounds


class DeviceData:
    def __init__(self, spec, data, eff: dict[str, np.ndarray], norm: dict[str, dict], device: torch.device,
                 channels_last: bool = True):
        self.spec, self.device, self.channels_last = spec, device, channels_last
        images = np.asarray(data.images)
        if images.dtype != np.uint8 or images.ndim != 4 or not images.flags.c_contiguous or not images.flags.writeable:
            images = np.ascontiguousarray(images, dtype=np.uint8).copy()
        self.images = torch.from_numpy(images)  # (N, H, W, C) uint8, in RAM once
        if device.type == "cuda" and self.images.nbytes < 0.4 * torch.cuda.mem_get_info(device)[0]:
            self.images = self.images.pin_memory().to(device, non_blocking=True)  # whole uint8 set on the GPU
        # else: images stay in host RAM; each batch is gathered, pinned and copied with non_blocking=True
        self.targets = {
            t.name: torch.from_numpy(np.ascontiguousarray(
                t.head.train_target(t, data.labels[t.name].values, norm.get(t.name)))).to(device)
            for t in spec.tasks
        }
        self.masks = {t: torch.from_numpy(np.ascontiguousarray(eff[t])).to(device) for t in spec.task_names}
        self.mask_matrix = np.stack([eff[t] for t in spec.task_names], axis=1)  # (N, T) bool, host: counts only

    def inputs(self, idx: Tensor, gen: torch.Generator | None, host_idx: Tensor | None = None) -> Tensor:
        if self.images.device == idx.device:
            x = self.images[idx]  # (B, H, W, C) uint8
        else:
            x = self.images[host_idx].pin_memory().to(self.device, non_blocking=True)
        aug = self.spec.training.augmentation
        if gen is not None and (aug.hflip or aug.crop):
            x = augment(x, aug.hflip, aug.crop, gen)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W), channels_last strides: no copy
        return x if self.channels_last else x.contiguous()  # an NCHW network gets NCHW input

    def dense(self, x: Tensor) -> Tensor:
        """x (a strided view, e.g. one rank's share of a batch) densely in the network's memory format."""
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def select(self, idx: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return {t: v[idx] for t, v in self.targets.items()}, {t: m[idx] for t, m in self.masks.items()}
