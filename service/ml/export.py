"""ONNX export of a trained MultiTaskCNN, checked against torch before it may be stored.

The graph (`model.onnx` in an artifact), for serving anywhere (ONNX Runtime, Triton, ...):
  input   "input.images"  uint8 (batch, H, W, C): the preprocessed images exactly as training saw them
          (meta.json "preprocessing": resized to image_size x image_size, bilinear; RGB (C=3) or L (C=1);
          HWC). Scaling by 1/255 and the normalisation ((x - 0.5) / 0.25) happen inside the graph.
  outputs one per task, named exactly as the task, float32, in spec order:
          multiclass (batch, K) logits (softmax -> probabilities, class order in meta.json label_maps);
          binary (batch,) logit (sigmoid >= 0.5 -> true); regression (batch,) standardised value
          (value = output * std + mean with meta.json normalization[task]). Gating is not in the graph:
          apply meta.json gate_order / label_maps[task].gate as service/ml/inference.py does.
  opset OPSET, dynamic batch axis "batch"; metadata_props carry the task list, normalisation and this text.
Exporter: torch.onnx.export(dynamo=False), the TorchScript-based exporter: it needs only the onnx package and
works offline; MultiTaskCNN has no data-dependent control flow, so tracing is exact.

The check (`check_onnx`) runs the exported graph in ONNX Runtime next to the torch network on the given images
(the validation images at registration): every head's max |onnx - torch| must be <= tolerance (1e-4) and every
gated head must be gated for exactly the same images; otherwise ExportError says which head failed and by how
much. onnx / onnxruntime are optional runtimes, imported only inside these functions.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from service.ml.inference import Predictor
from service.ml.network import MultiTaskCNN
from service.ml.spec import Spec

ONNX_FILE = "model.onnx"
INPUT_NAME = "input.images"  # task names cannot contain ".", so no output can take this name
OPSET = 17
TOLERANCE = 1e-4
CHECK_IMAGES = 256  # at most this many validation images are compared


class ExportError(RuntimeError):
    """The ONNX export failed or does not reproduce the torch network; the message says which head and why."""


class _Graph(nn.Module):
    """uint8 (B, H, W, C) -> one tensor per task, in spec order (what the exported graph computes)."""

    def __init__(self, model: MultiTaskCNN):
        super().__init__()
        self.model, self.names = model, list(model.task_names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images.permute(0, 3, 1, 2).float() / 255.0)
        return tuple(out[t] for t in self.names)


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a declared dependency
        raise ExportError(f"ONNX export needs the 'onnx' package ({exc})") from None
    return onnx


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a declared dependency
        raise ExportError(f"ONNX Runtime is not installed ({exc})") from None
    return onnxruntime


def export_onnx(spec: Spec, state_dict: dict[str, torch.Tensor], normalization: dict | None = None) -> bytes:
    """The network of (spec, state_dict) as ONNX bytes (see module doc). Raises ExportError."""
    onnx = _onnx()
    model = MultiTaskCNN(spec)
    model.load_state_dict(state_dict)
    graph = _Graph(model.eval().float())
    size, channels = spec.model.image_size, spec.model.channels
    dummy = torch.zeros(2, size, size, channels, dtype=torch.uint8)
    names = spec.task_names
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                graph, (dummy,), buf, dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                output_names=names, dynamic_axes={INPUT_NAME: {0: "batch"}, **{t: {0: "batch"} for t in names}},
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from None
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = __doc__.split("\n\n")[1]
    meta = {
        "headwise.tasks": json.dumps([{"name": t.name, "type": t.type, "classes": t.classes} for t in spec.tasks]),
        "headwise.normalization": json.dumps(normalization or {}),
        "headwise.input": f"{INPUT_NAME}: uint8 (batch, {size}, {size}, {channels}) HWC, scaled and normalised "
                          "inside the graph",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


class OnnxRunner:
    """An ONNX Runtime CPU session on model.onnx bytes: (B, H, W, C) uint8 -> {task: float32 array}.

    threads: intra-op threads (1 runs every op in the calling thread, no pool); inter-op 1, sequential
    execution. spin=False stops idle pool threads from busy-waiting (they would take CPU from the HTTP side)."""

    def __init__(self, data: bytes, task_names: Sequence[str], threads: int = 1, spin: bool = False):
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types
            raise ExportError(f"ONNX Runtime cannot load the model: {exc}") from None
        outputs = {o.name for o in self.session.get_outputs()}
        missing = [t for t in task_names if t not in outputs]
        if missing:
            raise ExportError(f"the ONNX model has no output for task(s) {', '.join(missing)}")
        self.names, self.input = list(task_names), self.session.get_inputs()[0].name
        self.threads = opts.intra_op_num_threads

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.names, {self.input: batch})
        return dict(zip(self.names, outs, strict=True))


def _gate_flags(spec: Spec, predictions: list[dict]) -> dict[str, list[bool]]:
    return {t.name: [bool(p[t.name].get("gated")) for p in predictions] for t in spec.tasks if t.gate is not None}


def check_onnx(data: bytes, predictor: Predictor, images: np.ndarray, tolerance: float = TOLERANCE) -> dict:
    """Compare the ONNX graph with the predictor's torch network on `images` ((N, H, W, C) uint8).
    -> report {"images", "tolerance", "max_abs_diff": {task: d}, "gate_decisions_identical": True}.
    Raises ExportError naming each head over tolerance, or each gated head whose decisions differ."""
    if len(images) == 0:
        raise ExportError("ONNX check: no images to compare the export with torch on")
    runner = OnnxRunner(data, predictor.spec.task_names)
    saved, predictor.runtime = predictor.runtime, None
    try:
        reference = predictor.outputs(images)
        predictor.runtime = runner
        onnx_out = predictor.outputs(images)
    finally:
        predictor.runtime = saved
    torch_preds, onnx_preds = predictor.decode(reference), predictor.decode(onnx_out)
    diffs = {t: float(np.max(np.abs(onnx_out[t] - reference[t]), initial=0.0)) for t in reference}
    problems = [f"head '{t}' differs from torch by up to {d:.3g} (limit {tolerance:g})"
                for t, d in diffs.items() if not d <= tolerance]  # NaN fails too
    ref_gates, onnx_gates = _gate_flags(predictor.spec, torch_preds), _gate_flags(predictor.spec, onnx_preds)
    for t, flags in ref_gates.items():
        changed = sum(a != b for a, b in zip(flags, onnx_gates[t], strict=True))
        if changed:
            problems.append(f"head '{t}' is gated differently from torch on {changed} of {len(images)} images")
    if problems:
        raise ExportError(f"ONNX export rejected on {len(images)} validation images: " + "; ".join(problems))
    return {"images": int(len(images)), "tolerance": tolerance, "max_abs_diff": diffs,
            "gate_decisions_identical": True, "opset": OPSET, "input": INPUT_NAME}


def check_images(spec: Spec, data, limit: int = CHECK_IMAGES) -> np.ndarray:
    """The images to check an export on: the trainer's validation split (the same seeded split), or the first
    training images when the spec has no validation split; at most `limit`, (N, H, W, C) uint8."""
    from service.ml.train import stratified_split

    _, val = stratified_split(spec, data)
    idx = val[:limit] if len(val) else np.arange(min(limit, len(data.images)))
    return np.asarray(data.images[idx])


def export_checked(predictor: Predictor, images: np.ndarray, tolerance: float = TOLERANCE) -> tuple[bytes, dict]:
    """Export the predictor's network and check it on `images` -> (model.onnx bytes, check report)."""
    state = {k: v.detach().cpu() for k, v in predictor.model.state_dict().items()}
    data = export_onnx(predictor.spec, state, predictor.normalization)
    return data, check_onnx(data, predictor, images[:CHECK_IMAGES], tolerance)
