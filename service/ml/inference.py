"""Predictor: an artifact -> per-sample, per-head predictions with gating.

Preprocessing is `service.ml.data.to_pixels`, the same function training used. Output per head:
  multiclass {"label", "probabilities": {class: p}}, binary {"label": bool, "probability"}, regression {"value"},
  multilabel {"labels": [tag, ...], "probabilities": {tag: p}} (decoding lives in the head types).
A gated head also has "gated": False when its predicted gate chain is positive; when negative it returns
{"value": None, "gated": True, "reason": "category predicted 'none'"} (+ "label": None for classification heads,
"labels": None for multilabel). The reason (service.ml.gating) names the first negative gate along the chain. With raw=True every head also gets "raw": the ungated
label (classification) or value (regression).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from service.ml import gating
from service.ml.artifact import load_artifact
from service.ml.data import to_pixels
from service.ml.network import MultiTaskCNN
from service.ml.spec import Spec

MAX_CHUNK = 512  # samples per network call


class Predictor:
    def __init__(
        self,
        spec: Spec,
        state_dict: dict[str, torch.Tensor],
        normalization: dict[str, dict],
        device: str = "cpu",
        meta: dict | None = None,
        bf16: bool | None = None,
    ):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.spec, self.meta, self.device = spec, meta or {}, torch.device(device)
        self.normalization = normalization
        self.order = spec.gate_order()
        self.size, self.channels = spec.model.image_size, spec.model.channels
        model = MultiTaskCNN(spec)
        model.load_state_dict(state_dict)
        model.eval().to(self.device)
        self.cuda = self.device.type == "cuda"
        # bf16 autocast (None: on CUDA only; True on CPU: the torch-bf16 serving runtime), channels_last with it
        self.bf16 = self.cuda if bf16 is None else bool(bf16)
        if self.cuda or self.bf16:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        # Optional replacement for the network (e.g. an ONNX Runtime session, service/ml/export.OnnxRunner):
        # a callable (B, H, W, C) uint8 -> {task: raw output array}. None: the torch network above.
        self.runtime = None

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu", bf16: bool | None = None) -> Predictor:
        art = load_artifact(Path(path))
        return cls(art.spec, art.state_dict, art.meta.get("normalization", {}), device=device, meta=art.meta,
                   bf16=bf16)

    @classmethod
    def from_result(cls, result, device: str = "cpu") -> Predictor:
        """A predictor straight from a TrainResult (no artifact on disk)."""
        return cls(result.spec, result.state_dict, result.normalization, device=device)

    def optimize_for_serving(self) -> Predictor:
        """(issue 5) CPU: replace the network by its TorchScript trace. A forward then runs in C++ without
        re-taking the GIL for every op, so a busy event loop in the same process no longer stalls each op by up
        to the GIL switch interval (and it is faster alone too). Bitwise the same outputs (same kernels, not
        frozen); MultiTaskCNN has no data-dependent control flow. CUDA, and bf16 on CPU, keep the eager module
        (bf16 autocast). If tracing is unavailable (torch.jit is deprecated) the eager module stays."""
        if self.cuda or self.bf16:
            return self
        x = torch.rand(2, self.channels, self.size, self.size, device=self.device)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                self.model = torch.jit.trace(self.model, x, strict=False)
        except Exception as exc:  # pragma: no cover - depends on the torch build
            warnings.warn(f"serving the eager network: tracing failed ({exc})", RuntimeWarning, stacklevel=2)
        return self

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> np.ndarray:
        """Images of any size/mode -> (B, H, W, C) uint8, exactly as in training."""
        if len(images) == 0:
            return np.zeros((0, self.size, self.size, self.channels), dtype=np.uint8)
        return np.stack([to_pixels(img, self.size, self.channels) for img in images])

    def predict(self, images: Sequence[PIL.Image.Image], *, raw: bool = False) -> list[dict]:
        return self.predict_arrays(self.preprocess(images), raw=raw)

    @torch.inference_mode()
    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw network outputs for a (B, H, W, C) uint8 batch: logits / standardised values, float64."""
        expected = (self.size, self.size, self.channels)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or batch.dtype != np.uint8:
            raise ValueError(
                f"batch must be uint8 (B, {', '.join(map(str, expected))}); "
                f"got {batch.dtype} {tuple(batch.shape)}"
            )
        if self.runtime is not None:
            out = self.runtime(np.ascontiguousarray(batch))
            return {t: np.asarray(out[t], dtype=np.float64) for t in self.spec.task_names}
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.spec.task_names}
        for s in range(0, len(batch), MAX_CHUNK):
            x = torch.from_numpy(np.ascontiguousarray(batch[s : s + MAX_CHUNK]))
            if self.cuda:
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W), channels_last strides
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(x)
            for t, v in out.items():
                parts[t].append(v.float().cpu().numpy().astype(np.float64))
        return {t: np.concatenate(v) if v else np.zeros((0,)) for t, v in parts.items()}

    def predict_arrays(self, batch: np.ndarray, *, raw: bool = False) -> list[dict]:
        if len(batch) == 0:
            return []
        return self.decode(self.outputs(batch), raw=raw)

    def decode(self, out: dict[str, np.ndarray], *, raw: bool = False) -> list[dict]:
        """Raw outputs (`outputs`) -> one prediction per image: every head decoded, gates applied."""
        n = len(next(iter(out.values()))) if out else 0
        if n == 0:
            return []
        preds = {t.name: t.head.predictions(t, out[t.name], self.normalization.get(t.name)) for t in self.spec.tasks}
        gates = gating.predicted_gates(self.spec, preds)
        results: list[dict] = [{} for _ in range(n)]
        for t in self.spec.tasks:
            head = t.head
            decoded = head.decode(t, preds[t.name], out[t.name])
            opened, reasons = gates[t.name]
            for i, res in enumerate(results):
                d = decoded[i]
                if raw:
                    d["raw"] = head.raw(d)
                if t.gate is not None:
                    if opened[i]:
                        d["gated"] = False
                    else:
                        d = {**head.gated_output(), "gated": True, "reason": reasons[i],
                             **({"raw": d["raw"]} if raw else {})}
                res[t.name] = d
        return results
