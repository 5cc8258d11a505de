"""Peak training memory of a spec, estimated from the network's structure before anything is queued.

The network is built on the meta device (no storage, no compute) and run forward once on a shape-only batch;
every tensor autograd saves for backward is counted (deduplicated by identity). That is the per-sample
activation cost of *this* network, whatever its backbone. Around it the estimate mirrors what the trainer holds
at its peak (service/ml/train.py):

- runtime: the interpreter with torch and the engine imported (measured; RUNTIME_BYTES);
- images: the decoded (N, S, S, C) uint8 cache, copied into RAM, plus its memory-mapped pages;
- parameters: weights + gradients + optimiser state (AdamW: 2 moments, SGD: 1) + the best epoch's copy and the
  checkpoint being written;
- training step: batch x (ACTIVATION_FACTOR x (saved activations + 2 gradient buffers of the largest
  activation) + the input batch as uint8 and float, twice for normalisation); ACTIVATION_FACTOR covers what
  the CPU backward adds on top (oneDNN layout copies, temporaries, heap fragmentation), measured;
- validation: inference on max(batch_size, 256) samples at once (no saved tensors, ~3 of the largest activation
  alive at a time).

The peak is the larger of the training step and the validation pass, times SLACK for allocator fragmentation.
It is checked against measured peaks (VmHWM of real trainings) in tests/guards/test_memory_estimate.py and is
meant to stay above them.

On CUDA the step runs under bf16 autocast when training.mixed_precision is "bf16", or "auto" for a net of at
least precision.CUDA_BF16_MIN_PARAMS parameters (service/ml/precision.py; "auto" assumes a GPU with native bf16,
Ampere or later; smaller nets train fp32 there, which is faster for them): the saved activations are then mostly
bf16, and the step's activation cost is CUDA_BF16_ACTIVATION x the fp32 saved tensors, plus the cuDNN/cuBLAS
workspaces (CUDA_WORKSPACE_BYTES, taken from the caching allocator) and the CUDA context (CUDA_CONTEXT_BYTES, on
the device but outside the allocator). Both constants were fitted to ONE H200 run of bench/memory_estimate.py
(bench/results/gpu/memory_estimate_cuda.json, torch 2.11 + cu130, 7 specs from 183 MB to 5.8 GB measured): the
bf16 step held 0.51-0.71x the fp32 saved tensors (max_memory_allocated minus parameters, optimiser state and
the uint8 image set). fp32 on CUDA ("none") keeps the CPU formula (not measured on a GPU: conservative). `MemoryBudgetError` (a SpecError: a 422 naming training.batch_size / model.image_size)
carries the estimate, the budget and the largest batch size that fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from service.ml.precision import cuda_prefers_bf16
from service.ml.spec import Spec, SpecError

RUNTIME_BYTES = 400 * 1024**2  # python + torch + engine imported, threads started (measured ~240 MB; margin)
CUDA_CONTEXT_BYTES = 600 * 1024**2  # the CUDA context on the device (outside the caching allocator)
CUDA_WORKSPACE_BYTES = 128 * 1024**2  # cuDNN/cuBLAS workspaces and autocast weight copies (inside the allocator)
CUDA_BF16_ACTIVATION = 0.75  # bf16 step / fp32 saved tensors: measured 0.51-0.71 on an H200 (module doc) + margin
VAL_BATCH_MIN = 256  # the trainer validates max(batch_size, 256) samples per forward
ACTIVATION_FACTOR = 1.5  # measured: backward temporaries, oneDNN layout copies and heap fragmentation add up
#                          to 0.8-1.3x the saved tensors on CPU (tests/guards/test_memory_estimate.py)
SLACK = 1.1  # on the whole peak: allocator rounding, transient copies (augmentation gather, loss terms)
_PROBE_BATCH = 2  # BatchNorm needs more than one sample per channel in training mode


class MemoryBudgetError(SpecError):
    """The spec's estimated peak does not fit the worker memory budget. `estimate`, `budget` (bytes) and
    `batch_size_fits` (largest training.batch_size that fits; 0 when none does) are attributes."""

    def __init__(self, errors: list[str] | str, estimate: int = 0, budget: int = 0, batch_size_fits: int = 0):
        super().__init__(errors)
        self.estimate, self.budget, self.batch_size_fits = estimate, budget, batch_size_fits

    def __reduce__(self):
        return (type(self), (self.errors, self.estimate, self.budget, self.batch_size_fits))


@dataclass(frozen=True)
class ActivationProfile:
    """Per-sample bytes of one network at one image size (fp32), from a shape-only forward."""

    saved: int  # tensors saved for backward, per sample
    largest: int  # largest single activation, per sample
    input: int  # one float input image
    parameters: int  # number of parameters (weights + weighting), not bytes


@dataclass(frozen=True)
class MemoryEstimate:
    total: int  # bytes, the peak (max of train step and validation) x SLACK
    device: str
    batch_size: int  # effective training batch (at most the training split)
    parts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"peak_bytes": self.total, "device": self.device, "batch_size": self.batch_size,
                "parts": dict(self.parts)}


def _probe_spec(spec: Spec) -> Spec:
    """Multiclass tasks whose classes are not resolved yet get 2 classes (heads are tiny either way)."""
    tasks = [t if t.type != "multiclass" or t.classes else t.model_copy(update={"classes": ["a", "b"]})
             for t in spec.tasks]
    return spec.model_copy(update={"tasks": tasks})


_PROFILES: dict[str, ActivationProfile] = {}  # by the probe spec's JSON (the estimate is asked for repeatedly)


def _profile(spec: Spec) -> ActivationProfile:
    from service.ml.network import MultiTaskCNN

    cfg = spec.model
    with torch.device("meta"):
        net = MultiTaskCNN(spec)
        x = torch.empty(_PROBE_BATCH, cfg.channels, cfg.image_size, cfg.image_size)
    net.train()
    saved: dict[int, torch.Tensor] = {}
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() and t.shape[0] == _PROBE_BATCH:  # activations (batch-major); weights are counted as params
            saved.setdefault(id(t), t)
            largest[0] = max(largest[0], t.nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    n_params = sum(p.numel() for p in net.parameters())
    per = _PROBE_BATCH
    return ActivationProfile(saved=sum(t.nbytes for t in saved.values()) // per, largest=largest[0] // per,
                             input=x.nbytes // per, parameters=n_params)


def activation_profile(spec: Spec) -> ActivationProfile:
    probe = _probe_spec(spec)  # model_copy: no re-validation of the made-up classes
    probe = probe.model_copy(update={"training": probe.training.model_copy(update={"batch_size": 1, "epochs": 1})})
    key = probe.model_dump_json()
    if key not in _PROFILES:
        if len(_PROFILES) >= 256:
            _PROFILES.clear()
        _PROFILES[key] = _profile(probe)
    return _PROFILES[key]


def split_sizes(spec: Spec, num_samples: int) -> tuple[int, int]:
    """(train, val) sample counts as the trainer's split makes them."""
    n_val = int(round(num_samples * spec.training.val_fraction))
    if spec.training.val_fraction > 0 and num_samples >= 3:
        n_val = min(max(n_val, 1), num_samples - 2)
    n_val = max(n_val, 0)
    return num_samples - n_val, n_val


def _train_batch(batch_size: int, n_train: int) -> int:
    """The largest batch the trainer forms: batch_size, or batch_size + 1 when the last batch would be 1."""
    if n_train <= 0:
        return 0
    if batch_size >= n_train:
        return n_train
    return batch_size + 1 if n_train % batch_size == 1 else batch_size


def estimate(spec: Spec, num_samples: int, *, device: str = "cpu", batch_size: int | None = None) -> MemoryEstimate:
    """Estimated peak bytes of training `spec` on `num_samples` images on `device` ("cpu" or "cuda")."""
    prof = activation_profile(spec)
    cfg, tc = spec.model, spec.training
    bs = tc.batch_size if batch_size is None else batch_size
    n_train, n_val = split_sizes(spec, num_samples)
    b_train, b_val = _train_batch(bs, n_train), min(max(bs, VAL_BATCH_MIN), n_val)
    pixels = cfg.image_size * cfg.image_size * cfg.channels
    cuda = device.startswith("cuda")
    copies = 4 if tc.optimizer == "adamw" else 3  # param + grad + moments
    parts = {
        "runtime": CUDA_CONTEXT_BYTES if cuda else RUNTIME_BYTES,
        "images": num_samples * pixels * (1 if cuda else 2),  # RAM copy (+ mapped cache pages on CPU)
        "parameters": prof.parameters * 4 * (copies + 2),  # + best-epoch copy + checkpoint
    }
    per_input = prof.input * 2 + pixels  # float input, its normalised copy, the uint8 gather
    if cuda and bf16_on_cuda(spec, prof.parameters):
        parts["workspace"] = CUDA_WORKSPACE_BYTES
        parts["train_step"] = b_train * (int(CUDA_BF16_ACTIVATION * prof.saved) + per_input)
        parts["validation"] = b_val * (int(1.5 * prof.largest) + per_input)  # ~3 bf16 activations alive
    else:
        if cuda:
            parts["workspace"] = CUDA_WORKSPACE_BYTES
        parts["train_step"] = b_train * (int(ACTIVATION_FACTOR * (prof.saved + 2 * prof.largest)) + per_input)
        parts["validation"] = b_val * (3 * prof.largest + per_input)
    base = parts["runtime"] + parts["images"] + parts["parameters"] + parts.get("workspace", 0)
    total = int(SLACK * (base + max(parts["train_step"], parts["validation"])))
    return MemoryEstimate(total=total, device="cuda" if cuda else "cpu", batch_size=b_train, parts=parts)


def bf16_on_cuda(spec: Spec, params: int | None = None) -> bool:
    """Whether a CUDA worker trains this spec under bf16 autocast ("auto" assumes a GPU with native bf16 and
    trains nets under precision.CUDA_BF16_MIN_PARAMS parameters fp32: precision.cuda_prefers_bf16)."""
    mode = spec.training.mixed_precision
    return mode == "bf16" or (mode == "auto" and cuda_prefers_bf16(params))


def largest_batch_size(spec: Spec, num_samples: int, budget: int, *, device: str = "cpu") -> int:
    """The largest training.batch_size (at most the spec's) whose estimate fits `budget`; 0 if none does."""
    lo, hi = 0, max(1, spec.training.batch_size)
    while lo < hi:  # the estimate is monotone in the batch size
        mid = (lo + hi + 1) // 2
        if estimate(spec, num_samples, device=device, batch_size=mid).total <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def budget_message(spec: Spec, num_samples: int, budget: int, *, device: str = "cpu",
                   setting: str = "HEADWISE_WORKER_MEMORY_BYTES") -> MemoryBudgetError | None:
    """None when the spec fits `budget`, else the error to raise (naming the fields to lower and by how much)."""
    est = estimate(spec, num_samples, device=device)
    if est.total <= budget:
        return None
    fits = largest_batch_size(spec, num_samples, budget, device=device)
    head = (f"estimated peak training memory {fmt_bytes(est.total)} ({est.total} bytes) on {est.device} exceeds "
            f"the worker memory budget {fmt_bytes(budget)} ({setting}={budget})")
    if fits >= 1:
        errors = [f"training.batch_size: {head}; the largest batch_size that fits is {fits}"]
    else:
        size = _largest_image_size(spec, num_samples, budget, device)
        hint = f"at most {size}" if size else "smaller"
        errors = [f"training.batch_size: {head}; no batch_size fits at this image size",
                  f"model.image_size: lower it ({hint} fits with batch_size 1) or lower model.width"]
    return MemoryBudgetError(errors, estimate=est.total, budget=budget, batch_size_fits=fits)


def check_budget(spec: Spec, num_samples: int, budget: int, *, device: str = "cpu") -> MemoryEstimate:
    """The estimate when it fits; raises MemoryBudgetError otherwise."""
    error = budget_message(spec, num_samples, budget, device=device)
    if error is not None:
        raise error
    return estimate(spec, num_samples, device=device)


def _largest_image_size(spec: Spec, num_samples: int, budget: int, device: str) -> int:
    lo, hi = 0, spec.model.image_size - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = spec.model_copy(update={"model": spec.model.model_copy(update={"image_size": max(mid, 8)})})
        if mid >= 8 and estimate(trial, num_samples, device=device, batch_size=1).total <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo if lo >= 8 else 0


__all__ = ["MemoryBudgetError", "MemoryEstimate", "activation_profile", "budget_message", "check_budget",
           "estimate", "fmt_bytes", "largest_batch_size"]
