"""Numeric precision and memory format for training: which autocast dtype, and whether to use channels_last.

`training.mixed_precision` (the spec) decides:
  "auto"  bf16 autocast where the device computes bf16 natively AND it pays: on CPU only with avx512_bf16 or
          AMX (detected from /proc/cpuinfo's flags, else torch's reported CPU capability); on CUDA when
          torch.cuda.is_bf16_supported() and the network has at least CUDA_BF16_MIN_PARAMS parameters (see
          below); fp32 elsewhere. A CPU without native bf16 emulates it, which is slower than fp32, so "auto"
          never picks it there.
  "bf16"  bf16 autocast whatever the hardware says (the user asked for it).
  "none"  fp32.
channels_last is used on CUDA (cuDNN runs NHWC convolutions faster) and on CPU (oneDNN too: 1.39x fp32 and 1.11x
under bf16 for the default net, issue 11's table), with one guard. In session 2, with this torch (2.13), small
CPU training steps crashed (glibc "double free or corruption", segfaults; seen with MultiTaskCNN at batch 3 in
fp32 channels_last, and at batches 1 and 3 under bf16). Nothing has reproduced it since:
  - bench/cl_crash.py (a standalone MultiTaskCNN-shaped net, each case in its own subprocess under glibc's
    MALLOC_CHECK_=3 + MALLOC_PERTURB_, BatchNorm on, oneDNN on, 2 threads, AdamW), the full sweep: batches 1-16
    and 64 x {fp32, bf16} x {channels_last, NCHW}, 200 steps each -> 68 cases, no failure (session 4, idle
    machine; bench/results/cl_crash.json);
  - bench/cl_crash_trainer.py (the real trainer with this guard off: channels_last and bf16 at every batch size,
    each epoch ending with a 3-sample step): batches 1-16 x {fp32, bf16}, twice -> 64 cases, no failure
    (bench/results/cl_crash_trainer.json).
The guard keeps every CPU training step at MIN_CPU_BATCH samples or more per process anyway: a smaller last batch
of an epoch joins the one before (`min_last_batch`), a run whose steps would still be smaller (a tiny training set
or batch_size) trains NCHW (`choose_precision(smallest_batch=...)`), and a CPU forward pass of fewer samples runs
fp32 (`autocast(batch)`). So the configurations that were seen to crash are never run, and the common ones run at
full speed.
CUDA rule (`cuda_prefers_bf16`), calibrated on ONE set of figures: the H200 runs of bench/results/gpu/
(torch 2.11, session 2). For the default MultiTaskCNN (64x64, width 32, depth 4: 0.41 M parameters) a bf16 +
channels_last training step ran at 0.81-0.83x the fp32 NCHW one (train_b64.json, train_b256.json), and
torch.compile at 0.89x (train_compile.json): such a net is launch-bound, cuDNN already runs fp32 convolutions
on TF32 tensor cores, and autocast only adds cast kernels. So a net below CUDA_BF16_MIN_PARAMS trains fp32
under "auto" (still channels_last). Larger nets (the torchvision backbones: mobilenet_v3_large ~3 M trunk
parameters, resnet18 ~11 M) keep bf16: their saved activations shrink to 0.51-0.71x (service/ml/memory.py),
which is what lets a 224x224 batch fit. Honest gap: no fp32-vs-bf16 TRAINING comparison of a backbone exists
yet (at inference, batch 64, bf16 was 0.93x fp32 for resnet18 and 0.82x for mobilenet_v3_large,
backbones_224.json), and no net between 0.41 M and ~3 M parameters was measured; the threshold (2 M, 5x the
measured small net, under the smallest backbone) is to be re-measured when a GPU is lent.
Only the forward pass runs under autocast: losses, metrics and the optimiser state stay fp32 (the trainer casts
outputs to float before the losses; parameters and AdamW moments are fp32 tensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags with native bf16 arithmetic
CPUINFO = Path("/proc/cpuinfo")
MODES = ("auto", "bf16", "none")
CPU_CHANNELS_LAST = True  # oneDNN NHWC convolutions; guarded by MIN_CPU_BATCH (module doc)
CUDA_BF16_MIN_PARAMS = 2_000_000  # "auto" on CUDA: fp32 below (small nets are launch-bound; module doc)
MIN_CPU_BATCH = 8  # CPU: no training step below this per process, no bf16 forward below it (module doc)


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags (the first "flags" line of /proc/cpuinfo); empty when it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_capability() -> str:
    """torch's name for the best SIMD level it dispatches to on this CPU (e.g. "AVX512", "AVX2", "DEFAULT")."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older/other builds
        return "DEFAULT"


def cpu_has_native_bf16(flags: Iterable[str] | None = None, capability: str | None = None) -> bool:
    """True when the CPU has bf16 arithmetic in hardware (avx512_bf16 or AMX).

    flags: CPU flags (default: read from /proc/cpuinfo); capability: torch's CPU capability string (default:
    asked from torch), consulted when there are no flags to read (not Linux) -- a capability naming AMX or
    BF16 counts as native support. Both parameters exist so the decision can be tested with fake hardware."""
    found = cpu_flags() if flags is None else frozenset(flags)
    if found & BF16_CPU_FLAGS:
        return True
    if found:  # the flags were readable and name no bf16 unit
        return False
    cap = (cpu_capability() if capability is None else capability).upper()
    return "AMX" in cap or "BF16" in cap


def min_last_batch(device_type: str, processes: int = 1) -> int:
    """The smallest last batch of an epoch that trains on its own (a smaller one joins the batch before): 2 per
    process (BatchNorm cannot train on one sample; no process gets an empty share), MIN_CPU_BATCH per process on
    CPU (module doc)."""
    return processes * (MIN_CPU_BATCH if device_type == "cpu" else 2)


def cuda_prefers_bf16(params: int | None) -> bool:
    """Whether "auto" on a bf16-capable GPU autocasts a network of `params` parameters (None: unknown -> bf16,
    the memory-safe choice). Calibrated on last session's H200 figures (module doc)."""
    return params is None or params >= CUDA_BF16_MIN_PARAMS


@dataclass(frozen=True)
class Precision:
    """What the trainer does on one device: autocast to bf16 or not, channels_last or not, and why."""

    device_type: str
    bf16: bool
    channels_last: bool
    reason: str

    @property
    def dtype(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def autocast(self, batch: int | None = None) -> contextlib.AbstractContextManager:
        """The context to run a forward pass of `batch` samples in (a no-op context when bf16 is off, and on CPU
        for batches smaller than MIN_CPU_BATCH)."""
        small = self.device_type == "cpu" and batch is not None and batch < MIN_CPU_BATCH
        if not self.bf16 or small:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Convert a module's parameters to the chosen memory format (in place; returns it). Parameters stay
        fp32 whatever the autocast dtype."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def describe(self) -> dict:
        return {"device": self.device_type, "dtype": self.dtype, "channels_last": self.channels_last,
                "reason": self.reason}


def choose_precision(
    mode: str,
    device: torch.device | str,
    *,
    flags: Iterable[str] | None = None,
    capability: str | None = None,
    cuda_bf16: bool | None = None,
    params: int | None = None,
    smallest_batch: int | None = None,
) -> Precision:
    """Decide autocast + memory format for `mode` ("auto" | "bf16" | "none") on `device` (see module doc).
    params: the network's parameter count (CUDA "auto" trains small nets fp32). flags/capability (CPU) and
    cuda_bf16 (CUDA) override the hardware detection, for tests. smallest_batch: the fewest samples one process
    gets in a training step; on CPU under MIN_CPU_BATCH the run trains NCHW (module doc)."""
    if mode not in MODES:
        raise ValueError(f"mixed_precision: {mode!r} is not one of {', '.join(MODES)}")
    kind = torch.device(device).type
    small = kind == "cpu" and smallest_batch is not None and smallest_batch < MIN_CPU_BATCH
    channels_last = kind == "cuda" or (kind == "cpu" and CPU_CHANNELS_LAST and not small)
    if mode == "none":
        return Precision(kind, False, channels_last, "mixed_precision 'none': fp32")
    if mode == "bf16":
        return Precision(kind, True, channels_last, "mixed_precision 'bf16': bf16 autocast as requested")
    if kind == "cpu":
        if cpu_has_native_bf16(flags, capability):
            return Precision(kind, True, channels_last, "auto: the CPU has native bf16 (avx512_bf16 or AMX)")
        return Precision(kind, False, channels_last, "auto: the CPU has no native bf16 (no avx512_bf16/AMX): fp32")
    if kind == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if supported and not cuda_prefers_bf16(params):
            return Precision(kind, False, channels_last, f"auto: {params} parameters < {CUDA_BF16_MIN_PARAMS}: "
                                                         "fp32 (faster than bf16 for small nets on a GPU)")
        if supported:
            return Precision(kind, True, channels_last, "auto: the GPU supports bf16")
        return Precision(kind, False, channels_last, "auto: the GPU has no bf16 support: fp32")
    return Precision(kind, False, channels_last, f"auto: fp32 on {kind}")
