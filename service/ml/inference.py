"""Predictor: an artifact -> per-sample, per-head predictions with gating.

Preprocessing is `service.ml.data.to_pixels`, the same function training used. Output per head:
  multiclass {"label", "probabilities": {class: p}}, binary {"label": bool, "probability"}, regression {"value"}.
A gated head also has "gated": False when its predicted gate chain is positive; when negative it returns
{"value": None, "gated": True, "reason": "category predicted 'none'"} (+ "label": None for classification heads).
The reason names the first negative gate along the chain. With raw=True every head also gets "raw": the ungated
label (classification) or value (regression).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch

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
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        # Optional replacement for the network (e.g. an ONNX Runtime session, service/ml/export.OnnxRunner):
        # a callable (B, H, W, C) uint8 -> {task: raw output array}. None: the torch network above.
        self.runtime = None

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu") -> Predictor:
        art = load_artifact(Path(path))
        return cls(art.spec, art.state_dict, art.meta.get("normalization", {}), device=device, meta=art.meta)

    @classmethod
    def from_result(cls, result, device: str = "cpu") -> Predictor:
        """A predictor straight from a TrainResult (no artifact on disk)."""
        return cls(result.spec, result.state_dict, result.normalization, device=device)

    def optimize_for_serving(self) -> Predictor:
        """(issue 5) CPU: replace the network by its TorchScript trace. A forward then runs in C++ without
        re-taking the GIL for every op, so a busy event loop in the same process no longer stalls each op by up
        to the GIL switch interval (and it is faster alone too). Bitwise the same outputs (same kernels, not
        frozen); MultiTaskCNN has no data-dependent control flow. CUDA keeps the eager module (bf16 autocast).
        If tracing is unavailable (torch.jit is deprecated) the eager module stays."""
        if self.cuda:
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
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
                out = self.model(x)
            for t, v in out.items():
                parts[t].append(v.float().cpu().numpy().astype(np.float64))
        return {t: np.concatenate(v) if v else np.zeros((0,)) for t, v in parts.items()}

    def predict_arrays(self, batch: np.ndarray, *, raw: bool = False) -> list[dict]:
        if len(batch) == 0:
            return []
        out = self.outputs(batch)
        decoded: dict[str, list[dict]] = {}
        for t in self.spec.tasks:
            o = out[t.name]
            if t.type == "multiclass":
                z = np.exp(o - o.max(axis=1, keepdims=True))
                p = z / z.sum(axis=1, keepdims=True)
                k = p.argmax(axis=1)
                decoded[t.name] = [
                    {
                        "label": t.classes[i],
                        "probabilities": dict(zip(t.classes, map(float, row), strict=True)),
                    }
                    for i, row in zip(k, p, strict=True)
                ]
            elif t.type == "binary":
                p = 1.0 / (1.0 + np.exp(-o))
                decoded[t.name] = [{"label": bool(v >= 0.5), "probability": float(v)} for v in p]
            else:
                norm = self.normalization.get(t.name, {"mean": 0.0, "std": 1.0})
                decoded[t.name] = [{"value": float(v)} for v in o * norm["std"] + norm["mean"]]
        results = [{} for _ in range(len(batch))]
        for name in self.order:
            t = self.spec.task(name)
            for i, res in enumerate(results):
                d = dict(decoded[name][i])
                if raw:
                    d["raw"] = d["value"] if t.type == "regression" else d["label"]
                if t.gate is not None:
                    reason = self._gate_reason(t, res, i, decoded)
                    if reason is None:
                        d["gated"] = False
                    else:
                        d = {
                            "value": None,
                            **({"label": None} if t.type != "regression" else {}),
                            "gated": True,
                            "reason": reason,
                            **({"raw": d["raw"]} if raw else {}),
                        }
                res[name] = d
        return [{t: res[t] for t in self.spec.task_names} for res in results]

    def _gate_reason(self, t, res: dict, i: int, decoded: dict) -> str | None:
        """None when the gate of task t is predicted positive; else the reason naming the first negative gate."""
        g = t.gate.task
        upstream = res[g]
        if upstream.get("gated"):
            return upstream["reason"]
        label = decoded[g][i]["label"]
        if self.spec.task(g).type == "binary":
            return None if label else f"{g} predicted false"
        return None if label in t.gate.classes else f"{g} predicted '{label}'"
