"""One training run: set-up, the optimisation step, an epoch and validation.

The step: forward (the ONE place with autocast/device handling: `_forward`), the masked loss per head
(service.ml.losses.masked_loss), the weighting strategy's backward (it may act on gradients), then the heads
without labels in the batch get `.grad = None` (AdamW/SGD skip them: no momentum, no weight decay), the optimiser
step and the strategy's after_step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from service.ml import gating, warm_start
from service.ml import metrics as M
from service.ml.backbones import finetune
from service.ml.distributed import World
from service.ml.losses import masked_loss
from service.ml.network import MultiTaskCNN
from service.ml.precision import choose_precision, min_last_batch
from service.ml.train import parallel
from service.ml.train.batches import DeviceData, batch_bounds
from service.ml.train.optim import Schedule, make_optimizer
from service.ml.train.split import epoch_seed, stratified_split
from service.ml.train.state import TrainingCancelled
from service.ml.weighting import make_weighting


def normalization(spec, data, eff: dict[str, np.ndarray], train_idx: np.ndarray) -> dict[str, dict]:
    """Per head with a label normalisation (regression), from its training samples."""
    norm = {}
    for t in spec.tasks:
        m = eff[t.name][train_idx]
        values = data.labels[t.name].values[train_idx][m]
        n = t.head.normalization(t, values)
        if n is not None:
            norm[t.name] = n
    return norm


class Run:
    """Everything train() sets up once; kept in one object so the step loop stays small."""

    def __init__(self, spec, data, device: torch.device, weights_dir=None, init=None, world: World | None = None,
                 split=None):
        self.spec, self.device, self.names = spec, device, spec.task_names
        self.world = world = world or World()  # several processes: service/ml/train/parallel.py
        tc = spec.training
        if len(data.images) < 3:
            raise ValueError(f"training needs at least 3 samples; got {len(data.images)}")
        self.values = {t: data.labels[t].values for t in self.names}
        self.own = {t: data.labels[t].mask.astype(bool) for t in self.names}
        self.eff = gating.effective_masks(spec, self.values, self.own)
        self.train_idx, self.val_idx = ((np.asarray(split[0], dtype=np.int64), np.asarray(split[1], dtype=np.int64))
                                        if split is not None else stratified_split(spec, data))
        self.norm = normalization(spec, data, self.eff, self.train_idx)
        # the epoch's batches (every epoch has the same sizes): a small last batch joins the one before
        self.min_last = min_last_batch(device.type, world.size)
        bounds = batch_bounds(len(self.train_idx), tc.batch_size, self.min_last)

        cuda = device.type == "cuda"
        torch.manual_seed(tc.seed)  # weight init
        # bf16 autocast + memory format per device and training.mixed_precision (service/ml/precision.py)
        model = MultiTaskCNN(spec)
        n_params = sum(p.numel() for p in model.parameters())  # CUDA "auto": small nets train fp32
        smallest = min(e - s for s, e in bounds) // world.size  # the fewest samples one process gets in a step
        self.precision = choose_precision(tc.mixed_precision, device, params=n_params, smallest_batch=smallest)
        self.data = DeviceData(spec, data, self.eff, self.norm, device, self.precision.channels_last)
        # model.pretrained: the weights-store entry, strict + sha256-checked (a resumed run then loads its checkpoint)
        self.pretrained = finetune.load_backbone(model, spec, weights_dir)
        # training.init_from: (parent spec, parent weights, source) -> trunk + matching heads (a resumed run then
        # loads its checkpoint over them)
        self.warm_start = warm_start.apply(model, spec, *init) if init is not None else None
        self.model = self.precision.prepare(model.to(device))
        if world.distributed:
            self.model = parallel.global_batchnorm(self.model, device)
        self.weighting = make_weighting(spec).to(device)
        self.weighting.bind(self.model)
        if tc.compile and self.weighting.multi_backward:
            # several backward passes through one compiled graph need its buffers kept (process-wide switch)
            torch._functorch.config.donated_buffer = False
        self.forward = torch.compile(self.model) if tc.compile else self.model
        if world.distributed:
            self.forward = parallel.wrap(self.model, device, world)
        self.opt = make_optimizer(self.model, self.weighting.optimizer_parameters(), tc, cuda)
        # epochs: the plan (explicit, or "auto" from the dataset size); the trainer may lower it after epoch 1
        self.schedule = Schedule(self.opt, tc, tc.planned_epochs(len(data.images)), len(bounds))
        self.shared = self.model.trunk_parameters()
        self.task_params = {t: self.model.head_parameters(t) + self.weighting.parameters_for(t) for t in self.names}
        self.frozen = False  # training.freeze_backbone_epochs: set per epoch

    def _forward(self, x: Tensor, net=None) -> dict[str, Tensor]:
        """The network call: autocast and precision live here (and only here)."""
        with self.precision.autocast(len(x)):
            out = (net or self.forward)(x)
        return {k: v.float() for k, v in out.items()}

    def losses(self, out: dict, targets: dict, masks: dict, counts: dict[str, int]) -> dict[str, Tensor]:
        return {t.name: masked_loss(t, t.head, out[t.name], targets[t.name], masks[t.name], counts[t.name])
                for t in self.spec.tasks}

    def step(self, idx: Tensor, cnt: np.ndarray, gen: torch.Generator | None, host_idx: Tensor | None = None
             ) -> dict[str, Tensor]:
        """One optimisation step on samples `idx` (device tensor); cnt: labelled count per head (host)."""
        x = self.data.inputs(idx, gen, host_idx)  # the global batch (augmentation draws for all of it)
        if self.world.distributed:  # this rank's share; cnt stays the GLOBAL count (parallel.py)
            idx, x = parallel.shard(idx, self.world), self.data.dense(parallel.shard(x, self.world))
        targets, masks = self.data.select(idx)
        out = self._forward(x)
        counts = dict(zip(self.names, (int(c) for c in cnt), strict=True))
        losses = to_backward = self.losses(out, targets, masks, counts)
        if self.world.distributed:
            losses = {t: v * self.world.size for t, v in losses.items()}
            to_backward = parallel.connect_inactive(losses, counts)
        self.opt.zero_grad(set_to_none=True)
        self.weighting.backward(to_backward, counts, self.shared)
        if self.world.distributed:
            parallel.sync_strategy_grads(self.weighting.optimizer_parameters(), self.world)
        for t, c in counts.items():
            if c == 0:  # this head saw no label: do not move it (AdamW/SGD skip params whose grad is None)
                for p in self.task_params[t]:
                    p.grad = None
        if self.frozen:  # the trunk does not move (no step, momentum or weight decay)
            finetune.drop_grads(self.shared)
        self.opt.step()
        self.weighting.after_step()
        return losses

    def train_epoch(self, epoch: int, should_stop, on_step) -> tuple[dict[str, dict], float]:
        """One epoch -> ({head: {"loss", "labelled"}}, the learning rate of its last step)."""
        seed, dev = self.spec.training.seed, self.device
        torch.manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(len(self.train_idx), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        perm = self.train_idx[order.numpy()]
        aug_gen = torch.Generator(device=dev).manual_seed(epoch_seed(seed + 1, epoch))
        bounds = batch_bounds(len(perm), self.spec.training.batch_size, self.min_last)
        counts = np.add.reduceat(self.data.mask_matrix[perm], [s for s, _ in bounds], axis=0)  # (steps, T)
        counts_dev = torch.from_numpy(counts.astype(np.float32)).to(dev)
        perm_host = torch.from_numpy(perm)
        perm_dev = perm_host.to(dev)
        loss_sum = torch.zeros(len(self.names), device=dev)
        self.model.train()
        self.frozen = finetune.is_frozen(epoch, self.spec.training.freeze_backbone_epochs)
        if self.frozen:
            finetune.hold_frozen(self.model.trunk())
        lr = self.opt.param_groups[0]["lr"]
        for step, (s, e) in enumerate(bounds):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training cancelled during epoch {epoch + 1}")
            lr = self.schedule.apply(epoch, step)
            cnt = counts[step]
            if on_step is not None:
                on_step({"epoch": epoch + 1, "step": step + 1, "steps": len(bounds),
                         "labelled": dict(zip(self.names, cnt.tolist(), strict=True))})
            if not cnt.any():
                continue  # no head has a label in this batch: nothing to learn, skip the step
            losses = self.step(perm_dev[s:e], cnt, aug_gen, perm_host[s:e])
            loss_sum += torch.stack([losses[t].detach() for t in self.names]) * counts_dev[step]
        if self.world.distributed:
            loss_sum = parallel.sum_over_ranks(loss_sum) / self.world.size
        labelled = counts.sum(axis=0)
        means = (loss_sum.cpu().numpy() / np.maximum(labelled, 1)).tolist()
        return {t: {"loss": means[j] if labelled[j] else None, "labelled": int(labelled[j])}
                for j, t in enumerate(self.names)}, lr

    @torch.inference_mode()
    def validate(self) -> tuple[dict, float | None]:
        if len(self.val_idx) == 0 or not self.world.is_main:  # several processes: rank 0 validates
            return {}, None
        self.model.eval()
        idx_host = torch.from_numpy(self.val_idx)
        idx_all = idx_host.to(self.device)
        chunks: dict[str, list[Tensor]] = {t: [] for t in self.names}
        bs = max(self.spec.training.batch_size, 256)
        for s in range(0, len(idx_all), bs):
            out = self._forward(self.data.inputs(idx_all[s : s + bs], None, idx_host[s : s + bs]), self.model)
            for t in self.names:
                chunks[t].append(out[t].cpu())
        out = {t: torch.cat(chunks[t]) for t in self.names}
        targets, masks = self.data.select(idx_all)
        counts = {t: int(m.sum()) for t, m in masks.items()}
        losses = self.losses(out, {t: v.cpu() for t, v in targets.items()}, {t: v.cpu() for t, v in masks.items()},
                             counts)
        vi = self.val_idx
        scores = M.evaluate(self.spec, {t: v.numpy() for t, v in out.items()},
                            {t: self.values[t][vi] for t in self.names}, {t: self.own[t][vi] for t in self.names},
                            self.norm)
        val, total, any_labelled = {}, 0.0, False
        for t in self.spec.tasks:
            n = counts[t.name]
            val[t.name] = {"loss": float(losses[t.name]) if n else None, **scores[t.name], "labelled": n}
            if n:
                total += t.weight * float(losses[t.name])
                any_labelled = True
        return val, (total if any_labelled else None)
