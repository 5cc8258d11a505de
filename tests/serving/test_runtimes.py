"""Serving runtimes (service/serving/runtimes.py): ONNX Runtime serves versions that have a model.onnx with the
same predictions and gating as torch, inside the real micro-batcher; versions without one keep serving through
torch; HEADWISE_PREDICT_RUNTIME=torch forces torch; a tampered model.onnx is refused, never silently used."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from service.ml.artifact import ArtifactError, save_artifact
from service.ml.examples import example_spec
from service.ml.export import ONNX_FILE, export_onnx
from service.ml.inference import Predictor
from service.ml.network import MultiTaskCNN
from service.ml.spec import parse_spec
from service.ml.train import TrainResult
from service.serving.batcher import BatcherConfig, InferenceWorker
from service.serving.predictor_cache import PredictorCache
from service.serving.runtimes import load_predictor

pytest.importorskip("onnxruntime")
SIZE = 16


def fixture_result() -> TrainResult:
    """A small network whose category head says "none" for about half of random images (both gate sides)."""
    raw = example_spec(image_size=SIZE, weighting="fixed")
    raw["model"].update(width=8, depth=2, head_hidden=8)
    spec = parse_spec(raw)
    torch.manual_seed(3)
    model = MultiTaskCNN(spec)
    with torch.no_grad():
        for head in model.heads:
            torch.nn.init.normal_(head[-1].weight, std=0.5)
    state = model.state_dict()
    logits = Predictor(spec, state, {}).outputs(images(64, seed=9))["category"]
    state["heads.0.3.bias"][0] -= float(np.median(logits[:, 0] - logits[:, 1:].max(axis=1)))
    return TrainResult(spec=spec, state_dict=state, history=[], metrics={}, best_epoch=1,
                       normalization={"size": {"mean": 0.5, "std": 0.2}, "hue": {"mean": 0.3, "std": 0.1}},
                       weighting={})


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runtimes")
    result = fixture_result()
    onnx = export_onnx(result.spec, result.state_dict, result.normalization)
    save_artifact(result, root / "with_onnx", extra_files={ONNX_FILE: onnx})
    save_artifact(result, root / "without_onnx")
    return {"with": root / "with_onnx", "without": root / "without_onnx"}


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert list(a) == list(b)
        for task in b:
            assert set(a[task]) == set(b[task])
            for key in ("label", "gated", "reason"):
                assert a[task].get(key) == b[task].get(key)
            if b[task].get("value") is not None:
                assert a[task]["value"] == pytest.approx(b[task]["value"], abs=1e-5)
            if "probability" in b[task]:
                assert a[task]["probability"] == pytest.approx(b[task]["probability"], abs=1e-6)


def test_runtime_choice(artifacts) -> None:
    assert load_predictor(artifacts["with"], runtime="onnxruntime").runtime_name == "onnxruntime"
    assert load_predictor(artifacts["with"], runtime="torch").runtime_name == "torch"
    assert load_predictor(artifacts["without"], runtime="onnxruntime").runtime_name == "torch"
    assert load_predictor(artifacts["with"], runtime="torch-bf16").runtime_name == "torch-bf16"
    with pytest.raises(ValueError, match="PREDICT_RUNTIME: 'tvm'"):
        load_predictor(artifacts["with"], runtime="tvm")


def test_onnx_runtime_serves_the_same_predictions_and_gating_as_torch(artifacts) -> None:
    batch = images(40, seed=1)
    ort = load_predictor(artifacts["with"], runtime="onnxruntime", threads=1)
    torch_ = load_predictor(artifacts["with"], runtime="torch").optimize_for_serving()
    want = torch_.predict_arrays(batch, raw=True)
    assert_same(ort.predict_arrays(batch, raw=True), want)
    gated = [r["size"]["gated"] for r in want]
    assert 0 < sum(gated) < len(gated)  # both sides of the gate are exercised
    assert [r["size"]["reason"] for r in want if r["size"]["gated"]][0] in ("category predicted 'none'",
                                                                            "is_big predicted false")


def test_bf16_runtime_runs_bf16_on_cpu_close_to_fp32(artifacts) -> None:
    """HEADWISE_PREDICT_RUNTIME=torch-bf16: the eager network in channels_last under bf16 autocast, on CPU too (no
    trace, no ONNX); raw outputs within bf16 rounding of fp32, and really not fp32 (they differ)."""
    cache = PredictorCache(1, lambda p: load_predictor(p, runtime="torch-bf16"),
                           batching=BatcherConfig(max_batch=8, trace=True))
    bf16 = cache.entry("v-bf16", str(artifacts["with"])).predictor
    assert bf16.bf16 and bf16.runtime is None and not isinstance(bf16.model, torch.jit.ScriptModule)
    assert next(bf16.model.parameters()).dtype == torch.float32  # weights stay fp32; autocast computes in bf16
    conv = next(m for m in bf16.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    fp32 = load_predictor(artifacts["with"], runtime="torch")
    assert not fp32.bf16
    batch = images(40, seed=3)
    got, want = bf16.outputs(batch), fp32.outputs(batch)
    diffs = {t: float(np.abs(got[t] - want[t]).max()) for t in want}
    assert max(diffs.values()) > 0, "bf16 autocast did not run"
    for t, d in diffs.items():
        assert d <= 0.05 * max(1.0, float(np.abs(want[t]).max())), (t, diffs)
    preds = bf16.predict_arrays(batch, raw=True)
    assert len(preds) == 40 and {"category", "size"} <= set(preds[0])


def test_through_the_cache_and_micro_batcher_order_and_isolation(artifacts) -> None:
    """Concurrent requests of mixed sizes, batched together by the real batcher on ONNX Runtime: each request
    gets its own results in order (equal to torch's); a broken request fails alone."""
    worker = InferenceWorker(torch_threads=1, name="test-ort")
    cache = PredictorCache(2, lambda p: load_predictor(p, runtime="onnxruntime", threads=1),
                           batching=BatcherConfig(max_batch=16, max_wait_ms=20, trace=True))
    entry = cache.entry("v-ort", str(artifacts["with"]))
    assert entry.predictor.runtime_name == "onnxruntime"
    assert not isinstance(entry.predictor.model, torch.jit.ScriptModule)  # no wasted trace under ORT
    entry.batcher.worker = worker
    reference = load_predictor(artifacts["without"])
    requests = [images(n, seed=10 + i) for i, n in enumerate((1, 3, 2, 5, 1, 4))]

    async def run() -> list:
        bad = np.zeros((2, SIZE + 1, SIZE, 3), np.uint8)  # wrong shape: fails inside run_batch
        return await asyncio.gather(*(entry.batcher.submit(r) for r in [*requests[:3], bad, *requests[3:]]),
                                    return_exceptions=True)

    results = asyncio.run(run())
    assert isinstance(results[3], ValueError) and "batch must be uint8" in str(results[3])
    for req, got in zip(requests, results[:3] + results[4:], strict=True):
        assert_same(got, reference.predict_arrays(req))
    assert entry.batcher.batches < len(requests) + 1 + len(requests)  # requests were batched together


def test_artifact_without_onnx_serves_through_torch_in_the_cache(artifacts) -> None:
    cache = PredictorCache(1, lambda p: load_predictor(p, runtime="onnxruntime"), batching=BatcherConfig(max_batch=8))
    entry = cache.entry("v-old", str(artifacts["without"]))
    assert entry.predictor.runtime_name == "torch" and entry.predictor.runtime is None
    assert isinstance(entry.predictor.model, torch.jit.ScriptModule)  # the torch path as before (traced)
    assert len(entry.predictor.predict_arrays(images(3))) == 3


def test_tampered_onnx_is_refused(artifacts, tmp_path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(artifacts["with"], bad)
    data = (bad / ONNX_FILE).read_bytes()
    (bad / ONNX_FILE).write_bytes(data.replace(b"category", b"categorx", 1))
    with pytest.raises(ArtifactError, match="model.onnx: sha256 mismatch"):
        load_predictor(bad, runtime="onnxruntime")
    assert load_predictor(bad, runtime="torch").runtime_name == "torch"  # the torch runtime never reads it
