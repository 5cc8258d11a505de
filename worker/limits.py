"""The training process's hard memory limit, and what an out-of-memory error becomes.

Why RLIMIT_DATA and not RLIMIT_AS: RLIMIT_AS counts every virtual mapping, and torch/OpenMP/CUDA reserve far
more address space than they touch (a CUDA process maps tens of GB it never uses; the importable torch
alone maps ~650 MB of shared libraries), so a limit on it either refuses healthy jobs or must be set so high
that it contains nothing. Since Linux 4.7 RLIMIT_DATA counts the private writable mappings (heap, anonymous
mmap: where tensors and numpy arrays live) and not the code or read-only file mappings; measured after
`import torch` + the engine, VmData is ~230 MB for ~240 MB RSS, so the limit tracks real memory closely.
An allocation beyond it fails inside the process (torch: RuntimeError "can't allocate memory"; numpy:
MemoryError) instead of waking the kernel's OOM killer, which may pick any process of the host.
cgroups would also contain page cache and child processes, but need a delegated cgroup tree (rarely
writable in a container); RLIMIT_DATA needs nothing. On a GPU the limit is the CUDA caching allocator's
per-process fraction (torch.cuda.set_per_process_memory_fraction) and host memory is left unlimited, as CUDA
needs large host mappings of its own.

Each job runs in a fresh Celery child (max_tasks_per_child 1); the soft limit is lowered there and restored
afterwards (so in-process callers, like the tests, get their limit back).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from service.config import Settings

log = logging.getLogger("headwise.worker")
SETTING = "HEADWISE_WORKER_MEMORY_BYTES"
OOM_TEXTS = ("can't allocate memory", "cannot allocate memory", "out of memory", "std::bad_alloc")


GPU_FRACTION = 0.9  # a CUDA worker's default budget: this share of its GPU's memory (the rest: other processes)


def gpu_memory_bytes(run=subprocess.run) -> int | None:
    """Total memory of this worker's first visible GPU (nvidia-smi: no torch, no CUDA context in the calling
    process); None without a GPU or nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    index = "0" if visible is None else visible.split(",")[0].strip()
    if index in ("", "-1"):
        return None
    try:
        out = run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", index],
                  capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return int(float(out.stdout.strip().splitlines()[0])) * 1024**2 if out.returncode == 0 else None
    except (ValueError, IndexError):
        return None


def resolve_worker_budget(settings: Settings, run=subprocess.run) -> int:
    """This worker's memory budget: HEADWISE_WORKER_MEMORY_BYTES when set; else, for a GPU worker
    (HEADWISE_TRAIN_DEVICE=cuda...), GPU_FRACTION of its GPU's memory; else the host default (60% of RAM or of the
    cgroup limit; also for TRAIN_DEVICE "auto", which may train on either). Called once in the Celery main process before the pool forks,
    which then exports it as HEADWISE_WORKER_MEMORY_BYTES: the claim, the registry, the hard limit and the
    out-of-memory message all read the same value."""
    if not settings.worker_memory_auto or not settings.TRAIN_DEVICE.startswith("cuda"):
        return settings.WORKER_MEMORY_BYTES
    total = gpu_memory_bytes(run)
    if total is None:
        log.warning("HEADWISE_TRAIN_DEVICE=%s but nvidia-smi reports no GPU: the memory budget stays %d bytes "
                    "(host default); set %s", settings.TRAIN_DEVICE, settings.WORKER_MEMORY_BYTES, SETTING)
        return settings.WORKER_MEMORY_BYTES
    return int(GPU_FRACTION * total)


@contextmanager
def host_memory_limit(settings: Settings) -> Iterator[int | None]:
    """RLIMIT_DATA soft limit = WORKER_MEMORY_BYTES for the duration (never above the hard limit, nor above the
    host's RAM / cgroup limit: a GPU worker's budget follows its GPU, and a CPU spec on it must not use that)."""
    from service.config import host_memory_bytes

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = min(settings.WORKER_MEMORY_BYTES, host_memory_bytes())
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError) as exc:  # pragma: no cover - a platform without RLIMIT_DATA semantics
        log.warning("could not set RLIMIT_DATA=%d: %s; training runs without a hard memory limit", limit, exc)
        yield None
        return
    log.info("training under RLIMIT_DATA=%d bytes (%s)", limit, SETTING)
    try:
        yield limit
    finally:
        lift_host_limit(soft, hard)


def lift_host_limit(soft: int | None = None, hard: int | None = None) -> None:
    """Restore the soft RLIMIT_DATA (default: the hard limit). Used when training moves to a GPU."""
    cur_soft, cur_hard = resource.getrlimit(resource.RLIMIT_DATA)
    hard = cur_hard if hard is None else hard
    resource.setrlimit(resource.RLIMIT_DATA, (hard if soft is None else soft, hard))


def limit_cuda(settings: Settings, device: Any) -> None:
    """On a CUDA device: cap this process's CUDA allocator at WORKER_MEMORY_BYTES (a fraction of the GPU)."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, settings.WORKER_MEMORY_BYTES / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.info("training on %s limited to %.0f%% of its %d bytes (%s)", device, 100 * fraction, total, SETTING)


def is_out_of_memory(exc: BaseException) -> bool:
    """A CPU or CUDA allocation failure (MemoryError, torch.OutOfMemoryError, "can't allocate memory", ENOMEM)."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in OOM_TEXTS)


def oom_message(spec: Any, num_samples: int, settings: Settings, device: str, cause: str = "") -> str:
    """What the job's error says: out of memory, the limit, and the setting to lower with a value that fits."""
    from service.ml import memory

    budget = settings.WORKER_MEMORY_BYTES
    kind = "GPU" if device.startswith("cuda") else "host"
    bs = spec.training.batch_size
    fits = memory.largest_batch_size(spec, num_samples, budget, device=device)
    # The estimate said it fits, yet it did not: never suggest less than a halving.
    suggestion = min(fits, max(bs // 2, 1)) if fits else 0
    head = (f"out of memory: training ran out of {kind} memory under the worker's limit of "
            f"{memory.fmt_bytes(budget)} ({SETTING}={budget})")
    cause = f" [{cause.strip()[:200]}]" if cause.strip() else ""
    if suggestion and suggestion < bs:
        return f"{head}; lower training.batch_size to {suggestion} (from {bs}) or lower model.image_size{cause}"
    size = max(spec.model.image_size // 2, 8)
    return (f"{head}; training.batch_size is already {bs}: lower model.image_size (e.g. to {size}) or "
            f"model.width, or raise {SETTING} on the workers{cause}")
