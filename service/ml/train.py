"""The trainer: masked multi-task training with a seeded stratified split, per-epoch checkpoints and resume.

Determinism: every epoch starts from `torch.manual_seed(epoch_seed(seed, epoch))` (dropout) and draws its shuffle
and augmentation from generators seeded the same way, so an epoch depends only on the state saved at the end of
the previous one: a run resumed from a checkpoint is bit-identical (on CPU) to an uninterrupted run.

A head with no labelled sample in a batch does not move: after backward its parameters (and its weighting
parameters) get `.grad = None`, which makes AdamW/SGD skip them entirely (no momentum, no weight decay).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from service.ml import metrics as M
from service.ml.losses import make_weighting, per_sample_loss, task_losses
from service.ml.network import MultiTaskCNN
from service.ml.spec import Spec, SpecError

if TYPE_CHECKING:
    from service.ml.data import TrainingData

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1


class TrainingCancelled(Exception):
    """train() stopped because should_stop() returned True; the checkpoint of the last complete epoch is kept."""


@dataclass
class TrainResult:
    spec: Spec
    state_dict: dict[str, Tensor]  # the best epoch's network weights (CPU)
    history: list[dict]
    metrics: dict  # {"val_loss": float | None, "tasks": {task: {metric: value}}} of the best epoch
    best_epoch: int  # 1-based
    normalization: dict[str, dict]  # regression task -> {"mean", "std"} (identity when standardize is off)
    weighting: dict[str, float]  # effective task weights at the best epoch


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def resolve_device(device: str, spec: Spec) -> torch.device:
    name = spec.training.device if device == "auto" else device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was requested but no CUDA device is available")
    return torch.device(name)


def stratified_split(spec: Spec, data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split -> (train indices, val indices), both sorted. Stratified on the first classification task's
    label (unlabelled samples form their own stratum); val samples are spread evenly over each stratum."""
    n = len(data.images)
    n_val = int(round(n * spec.training.val_fraction))
    if spec.training.val_fraction > 0:
        n_val = min(max(n_val, 1), n - 2)
    if n_val <= 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    strata = np.zeros(n, dtype=np.int64)
    first = next((t for t in spec.tasks if t.type != "regression"), None)
    if first is not None:
        lab = data.labels[first.name]
        strata = np.where(lab.mask, lab.values.astype(np.int64), -1)
    perm = np.random.default_rng(spec.training.seed).permutation(n)
    order = perm[np.argsort(strata[perm], kind="stable")]  # grouped by stratum, random within
    picks = ((np.arange(n_val) + 0.5) * n / n_val).astype(np.int64)
    val = np.sort(order[picks])
    return np.setdiff1d(np.arange(n), val), val


def _normalization(spec: Spec, data: TrainingData, eff: dict[str, np.ndarray], train_idx) -> dict[str, dict]:
    norm = {}
    for t in spec.tasks:
        if t.type != "regression":
            continue
        v = data.labels[t.name].values[train_idx][eff[t.name][train_idx]].astype(np.float64)
        if t.standardize and len(v):
            norm[t.name] = {"mean": float(v.mean()), "std": max(float(v.std()), 1e-6)}
        else:
            norm[t.name] = {"mean": 0.0, "std": 1.0}
    return norm


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


def _task_params(model: MultiTaskCNN, weighting, task: str) -> list[torch.nn.Parameter]:
    params = list(model.head_parameters(task))
    return params + list(weighting.parameters_for(task))


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _score(item: dict, metric: str) -> float | None:
    if metric == "val_loss":
        return item["val_loss"]
    task, key = metric.split(".", 1)
    return item["val"].get(task, {}).get(key)


class _Run:
    """Everything train() sets up once; kept in one object so the step loop stays small."""

    def __init__(self, spec: Spec, data: TrainingData, device: torch.device):
        self.spec, self.device, self.names = spec, device, spec.task_names
        tc = spec.training
        n = len(data.images)
        if n < 3:
            raise ValueError(f"training needs at least 3 samples; got {n}")
        own = {t: data.labels[t].mask.astype(bool) for t in self.names}
        values = {t: data.labels[t].values for t in self.names}
        self.eff = M.effective_masks(spec, values, own)
        self.train_idx, self.val_idx = stratified_split(spec, data)
        self.norm = _normalization(spec, data, self.eff, self.train_idx)
        cols = []
        for t in spec.tasks:
            v = values[t.name].astype(np.float32)
            if t.type == "regression":
                v = (v - self.norm[t.name]["mean"]) / self.norm[t.name]["std"]
            cols.append(np.where(self.eff[t.name], v, 0.0).astype(np.float32))
        self.y_all = np.stack(cols, axis=1)  # (N, T) float32; class index / 0-1 / standardised value
        self.m_all = np.stack([self.eff[t] for t in self.names], axis=1)  # (N, T) bool effective masks
        self.values, self.own = values, own

        cuda = device.type == "cuda"
        images = np.asarray(data.images)
        if (
            images.dtype != np.uint8
            or images.ndim != 4
            or not images.flags.c_contiguous
            or not images.flags.writeable
        ):
            images = np.ascontiguousarray(images, dtype=np.uint8).copy()
        self.images = torch.from_numpy(images)  # (N, H, W, C) uint8, in RAM once
        if cuda and self.images.nbytes < 0.4 * torch.cuda.mem_get_info(device)[0]:
            self.images = self.images.pin_memory().to(device, non_blocking=True)  # whole uint8 set on the GPU
        # else: images stay in host RAM; each batch is gathered, pinned and copied with non_blocking=True
        self.y = torch.from_numpy(self.y_all).to(device)
        self.m = torch.from_numpy(self.m_all).to(device)
        self.multiclass = [t.type == "multiclass" for t in spec.tasks]

        torch.manual_seed(tc.seed)  # weight init
        self.model = MultiTaskCNN(spec).to(device)
        if cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weighting = make_weighting(spec).to(device)
        self.forward = torch.compile(self.model) if tc.compile else self.model
        amp = tc.mixed_precision == "bf16" or (tc.mixed_precision == "auto" and cuda)
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=amp)
        groups = [{"params": list(self.model.parameters()), "weight_decay": tc.weight_decay}]
        wparams = list(self.weighting.parameters())
        if wparams:
            groups.append({"params": wparams, "weight_decay": 0.0})
        if tc.optimizer == "adamw":
            self.opt = torch.optim.AdamW(groups, lr=tc.learning_rate, fused=cuda or None)
        else:
            self.opt = torch.optim.SGD(groups, lr=tc.learning_rate, momentum=tc.momentum)
        epochs = tc.epochs
        cosine = tc.schedule == "cosine"
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda e: 0.5 * (1.0 + math.cos(math.pi * e / epochs)) if cosine else 1.0
        )
        self.task_params = {t: _task_params(self.model, self.weighting, t) for t in self.names}

    # ------------------------------------------------------------ batches
    def _batches(self, count: int) -> list[tuple[int, int]]:
        bs = self.spec.training.batch_size
        bounds = [(s, min(s + bs, count)) for s in range(0, count, bs)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:  # BatchNorm cannot train on one sample
            bounds[-2:] = [(bounds[-2][0], count)]
        return bounds

    def _inputs(self, idx: Tensor, gen: torch.Generator | None, host_idx: Tensor | None = None) -> Tensor:
        if self.images.device == idx.device:
            x = self.images[idx]  # (B, H, W, C) uint8
        else:
            x = self.images[host_idx].pin_memory().to(self.device, non_blocking=True)
        aug = self.spec.training.augmentation
        if gen is not None and (aug.hflip or aug.crop):
            x = augment(x, aug.hflip, aug.crop, gen)
        return x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W), channels_last strides

    def _targets(self, idx: Tensor) -> tuple[dict, dict]:
        y, m = self.y[idx], self.m[idx]  # (B, T)
        pairs = enumerate(zip(self.names, self.multiclass, strict=True))
        targets = {t: (y[:, j].long() if mc else y[:, j]) for j, (t, mc) in pairs}
        return targets, {t: m[:, j] for j, t in enumerate(self.names)}

    def _losses(
        self, out: dict, targets: dict, masks: dict, cnt: np.ndarray
    ) -> dict[str, tuple[Tensor, int]]:
        """Masked mean loss per head, like losses.task_losses but with the (effective) masks and host-side counts
        known in advance, so a step never waits for the device. Targets are 0 (valid) where masked out."""
        res = {}
        for task, c in zip(self.spec.tasks, cnt.tolist(), strict=True):
            per = per_sample_loss(task, out[task.name], targets[task.name])  # (B,)
            res[task.name] = (torch.where(masks[task.name], per, 0.0).sum() / max(c, 1), c)
        return res

    def step(
        self, idx: Tensor, cnt: np.ndarray, gen: torch.Generator | None, host_idx: Tensor | None = None
    ) -> dict[str, tuple[Tensor, int]]:
        """One optimisation step on samples `idx` (device tensor); cnt: labelled count per head (host)."""
        x = self._inputs(idx, gen)
        targets, masks = self._targets(idx)
        with torch.autocast(**self.autocast):
            out = self.forward(x)
        losses = self._losses({k: v.float() for k, v in out.items()}, targets, masks, cnt)
        total = self.weighting.combine(losses)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        for t, c in zip(self.names, cnt, strict=True):
            if c == 0:  # this head saw no label: do not move it (AdamW/SGD skip params whose grad is None)
                for p in self.task_params[t]:
                    p.grad = None
        self.opt.step()
        return losses

    # ------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int, should_stop, on_step) -> dict[str, dict]:
        spec, dev = self.spec, self.device
        torch.manual_seed(epoch_seed(spec.training.seed, epoch))
        perm = self.train_idx[
            torch.randperm(
                len(self.train_idx),
                generator=torch.Generator().manual_seed(epoch_seed(spec.training.seed, epoch)),
            ).numpy()
        ]
        aug_gen = torch.Generator(device=dev).manual_seed(epoch_seed(spec.training.seed + 1, epoch))
        bounds = self._batches(len(perm))
        counts = np.add.reduceat(
            self.m_all[perm], [s for s, _ in bounds], axis=0
        )  # (steps, T) labelled per head
        counts_dev = torch.from_numpy(counts.astype(np.float32)).to(dev)
        perm_host = torch.from_numpy(perm)
        perm_dev = perm_host.to(dev)
        loss_sum = torch.zeros(len(self.names), device=dev)
        self.model.train()
        for step, (s, e) in enumerate(bounds):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training cancelled during epoch {epoch + 1}")
            cnt = counts[step]
            if on_step is not None:
                on_step(
                    {
                        "epoch": epoch + 1,
                        "step": step + 1,
                        "steps": len(bounds),
                        "labelled": dict(zip(self.names, cnt.tolist(), strict=True)),
                    }
                )
            if not cnt.any():
                continue  # no head has a label in this batch: nothing to learn, skip the step
            losses = self.step(perm_dev[s:e], cnt, aug_gen, perm_host[s:e])
            loss_sum += torch.stack([losses[t][0].detach() for t in self.names]) * counts_dev[step]
        labelled = counts.sum(axis=0)
        means = (loss_sum.cpu().numpy() / np.maximum(labelled, 1)).tolist()
        return {
            t: {"loss": means[j] if labelled[j] else None, "labelled": int(labelled[j])}
            for j, t in enumerate(self.names)
        }

    # ------------------------------------------------------------ validation
    @torch.inference_mode()
    def validate(self) -> tuple[dict, float | None]:
        if len(self.val_idx) == 0:
            return {}, None
        self.model.eval()
        idx_host = torch.from_numpy(self.val_idx)
        idx_all = idx_host.to(self.device)
        chunks: dict[str, list[Tensor]] = {t: [] for t in self.names}
        bs = max(self.spec.training.batch_size, 256)
        for s in range(0, len(idx_all), bs):
            with torch.autocast(**self.autocast):
                out = self.forward(self._inputs(idx_all[s : s + bs], None, idx_host[s : s + bs]))
            for t in self.names:
                chunks[t].append(out[t].float().cpu())
        out = {t: torch.cat(chunks[t]) for t in self.names}
        targets, masks = self._targets(idx_all)
        losses = task_losses(
            self.spec, out, {t: v.cpu() for t, v in targets.items()}, {t: v.cpu() for t, v in masks.items()}
        )
        vi = self.val_idx
        scores = M.evaluate(
            self.spec,
            {t: v.numpy() for t, v in out.items()},
            {t: self.values[t][vi] for t in self.names},
            {t: self.own[t][vi] for t in self.names},
            self.norm,
        )
        val, total, any_labelled = {}, 0.0, False
        for t in self.spec.tasks:
            loss, n = losses[t.name]
            n = int(n)
            val[t.name] = {"loss": float(loss) if n else None, **scores[t.name]}
            val[t.name]["labelled"] = n
            if n:
                total += t.weight * float(loss)
                any_labelled = True
        return val, (total if any_labelled else None)


def train(
    spec: Spec,
    data: TrainingData,
    *,
    device: str = "auto",
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | str | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a MultiTaskCNN on `data` (see module doc). Raises TrainingCancelled when should_stop() turns true."""
    dev = resolve_device(device, spec)
    es = spec.training.early_stopping
    select = es.metric if es is not None else "val_loss"
    if select != "val_loss":
        task, key = select.split(".", 1)
        if key not in M.metric_names(spec, task):
            raise SpecError(
                [
                    f"training.early_stopping.metric: '{key}' is not a metric of '{task}'; allowed: "
                    f"{', '.join(M.metric_names(spec, task))}"
                ]
            )
    # Deterministic kernels on CPU (process-global: restored afterwards). Filling uninitialised memory with NaN
    # (a debugging aid that is part of deterministic mode) only costs time, so it is switched off meanwhile.
    det = torch.utils.deterministic
    restore = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        det.fill_uninitialized_memory,
    )
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = False
    try:
        return _train(spec, data, dev, select, on_epoch, should_stop, checkpoint_dir, on_step)
    finally:
        torch.use_deterministic_algorithms(restore[0], warn_only=restore[1])
        det.fill_uninitialized_memory = restore[2]


def _train(spec, data, dev, select, on_epoch, should_stop, checkpoint_dir, on_step) -> TrainResult:
    run = _Run(spec, data, dev)
    higher = M.higher_is_better(select)
    history: list[dict] = []
    best = {"epoch": 0, "score": None, "state": None, "weights": None}
    done, start = False, 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck.get("version") != CHECKPOINT_VERSION or ck["spec"] != spec.model_dump_json():
            raise ValueError(
                f"{ckpt_path}: checkpoint belongs to a different spec or format; remove it to restart"
            )
        if not (
            np.array_equal(ck["train_idx"].numpy(), run.train_idx)
            and np.array_equal(ck["val_idx"].numpy(), run.val_idx)
        ):
            raise ValueError(f"{ckpt_path}: checkpoint was written for different data; remove it to restart")
        run.model.load_state_dict(ck["model"])
        run.weighting.load_state_dict(ck["weighting"])
        run.opt.load_state_dict(ck["optimizer"])
        run.sched.load_state_dict(ck["scheduler"])
        history, best, done, start = ck["history"], ck["best"], ck["done"], ck["epoch"]
    elif ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)

    patience = spec.training.early_stopping.patience if spec.training.early_stopping else None
    for epoch in range(start, spec.training.epochs):
        if done:
            break
        t0 = time.perf_counter()
        lr = run.opt.param_groups[0]["lr"]
        train_stats = run.train_epoch(epoch, should_stop, on_step)
        train_seconds = time.perf_counter() - t0
        weights = run.weighting.weights()
        run.weighting.end_epoch({t: v["loss"] for t, v in train_stats.items() if v["loss"] is not None})
        run.sched.step()
        val, val_loss = run.validate()
        seconds = time.perf_counter() - t0
        item = {
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": seconds,
            "images_per_second": len(run.train_idx) / max(train_seconds, 1e-9),
            "weights": weights,
            "train": train_stats,
            "val": val,
            "val_loss": val_loss,
        }
        history.append(item)
        score = _score(item, select)
        if (
            score is not None
            and math.isfinite(score)
            and (best["score"] is None or (score > best["score"] if higher else score < best["score"]))
        ):
            best = {"epoch": epoch + 1, "score": score, "state": _cpu_state(run.model), "weights": weights}
        if patience is not None and best["epoch"] and epoch + 1 - best["epoch"] >= patience:
            done = True
        if ckpt_path is not None:
            _atomic_save(
                {
                    "version": CHECKPOINT_VERSION,
                    "spec": spec.model_dump_json(),
                    "epoch": epoch + 1,
                    "model": run.model.state_dict(),
                    "optimizer": run.opt.state_dict(),
                    "scheduler": run.sched.state_dict(),
                    "weighting": run.weighting.state_dict(),
                    "history": history,
                    "best": best,
                    "done": done,
                    "train_idx": torch.from_numpy(run.train_idx),
                    "val_idx": torch.from_numpy(run.val_idx),
                    "normalization": run.norm,
                },
                ckpt_path,
            )
        if on_epoch is not None:
            on_epoch(item)

    if best["state"] is None:  # no usable validation score: keep the last epoch
        best = {
            "epoch": len(history),
            "score": None,
            "state": _cpu_state(run.model),
            "weights": history[-1]["weights"] if history else run.weighting.weights(),
        }
    chosen = history[best["epoch"] - 1] if history else {"val": {}, "val_loss": None}
    return TrainResult(
        spec=spec,
        state_dict=best["state"],
        history=history,
        metrics={"val_loss": chosen["val_loss"], "tasks": chosen["val"]},
        best_epoch=best["epoch"],
        normalization=run.norm,
        weighting=best["weights"],
    )
