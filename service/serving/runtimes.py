"""Serving runtimes: what runs a loaded model version's network inside the inference thread.

HEADWISE_PREDICT_RUNTIME (Settings.PREDICT_RUNTIME):
  onnxruntime (default)  on a CPU predict device, a version whose artifact has a model.onnx (exported and checked
                         against torch by the worker at registration; its sha256 is verified when loaded) runs it
                         in ONNX Runtime. Measured on the 2-core AMX CPU: batch 1 in 0.95 ms vs 2.05 ms for the
                         TorchScript trace, batch 64 1.6x the images/s (bench/predict.py, 2026-11-30).
  torch                  the torch network (a TorchScript trace on CPU when PREDICT_TRACE; eager bf16 on CUDA).
  torch-bf16             the torch network under bf16 autocast, channels_last (eager), on CPU too. For large
                         backbones on a CPU with native bf16 (AMX): resnet18 at 224x224 ran 2.76x the fp32
                         Predictor's images/s on the 2-core AMX machine (bench/backbones.py). Outputs differ from
                         the validated fp32 ones by bf16 rounding (max abs diff ~1e-2 on probabilities), so a
                         decision or gate right at its threshold can differ from fp32; opt in where that is
                         acceptable. For the small default network ONNX Runtime (fp32) is faster at batch 1.
Versions without model.onnx (artifacts from before the export existed) and CUDA devices always use torch.
The runtime only replaces the network call (`Predictor.runtime`): preprocessing, decoding and gating stay the
Predictor's, and batching, ordering and error isolation stay the micro-batcher's.

Threads: ONNX Runtime gets `threads` intra-op threads, the same budget as torch (Settings.TORCH_THREADS,
"auto" = usable CPUs - 1): with 1 thread it runs every op in the inference thread itself (no pool); with more,
pool threads do not spin while idle, so they never take CPU from the event loop between batches.
Loading never unpickles: safetensors weights, JSON, and the ONNX protobuf.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("headwise.serving")

RUNTIMES = ("onnxruntime", "torch", "torch-bf16")


def load_predictor(path: str | Path, *, device: str = "cpu", runtime: str = "onnxruntime", threads: int = 1) -> Any:
    """Load the artifact at `path` as a Predictor whose network runs in `runtime` where it can (see module doc).
    The predictor gets `runtime_name` ("onnxruntime" | "torch") saying which one serves it."""
    from service.ml.artifact import read_optional_file
    from service.ml.export import ONNX_FILE, OnnxRunner
    from service.ml.inference import Predictor

    if runtime not in RUNTIMES:
        raise ValueError(f"PREDICT_RUNTIME: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    bf16 = True if runtime == "torch-bf16" else None  # None: bf16 on CUDA only
    predictor = Predictor.load(path, device=device, bf16=bf16)
    predictor.runtime_name = runtime if runtime == "torch-bf16" else "torch"
    if runtime == "onnxruntime" and predictor.device.type == "cpu":
        data = read_optional_file(Path(path), ONNX_FILE)  # None: an older artifact, served by torch
        if data is not None:
            predictor.runtime = OnnxRunner(data, predictor.spec.task_names, threads=max(1, threads))
            predictor.runtime_name = "onnxruntime"
    log.info("serving %s with %s", path, predictor.runtime_name)
    return predictor


def uses_torch(predictor: Any) -> bool:
    """True when the torch network serves this predictor (so a TorchScript trace is worth making)."""
    return getattr(predictor, "runtime", None) is None
