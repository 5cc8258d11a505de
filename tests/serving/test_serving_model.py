"""Predictor.optimize_for_serving (TorchScript trace on CPU) and the predictor cache's load/warm-up/eviction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.ml.examples import example_spec
from service.ml.inference import Predictor
from service.ml.network import MultiTaskCNN
from service.ml.spec import parse_spec
from service.serving.batcher import BatcherConfig
from service.serving.predictor_cache import PredictorCache


def make_predictor() -> Predictor:
    spec = example_spec(image_size=16, weighting="fixed")
    spec["model"].update(width=4, depth=2, head_hidden=8)
    spec = parse_spec(spec)
    torch.manual_seed(0)
    return Predictor(spec, MultiTaskCNN(spec).state_dict(), {"size": {"mean": 0.5, "std": 0.2}})


def test_traced_network_gives_the_same_outputs():
    eager, traced = make_predictor(), make_predictor().optimize_for_serving()
    assert isinstance(traced.model, torch.jit.ScriptModule) and not isinstance(eager.model, torch.jit.ScriptModule)
    rng = np.random.default_rng(0)
    for n in (1, 5, 64):
        batch = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        a, b = eager.outputs(batch), traced.outputs(batch)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert eager.predict_arrays(batch) == traced.predict_arrays(batch)


@pytest.mark.parametrize("trace", [True, False])
def test_cache_traces_warms_up_and_evicts(trace):
    loaded: list[Predictor] = []

    def loader(path: str) -> Predictor:
        loaded.append(make_predictor())
        return loaded[-1]

    cache = PredictorCache(1, loader, batching=BatcherConfig(max_batch=8, trace=trace))
    first = cache.entry("v1", "/unused")
    assert cache.entry("v1", "/unused") is first and cache.loads == 1
    assert isinstance(first.predictor.model, torch.jit.ScriptModule) == trace
    second = cache.entry("v2", "/unused")  # capacity 1: v1 is evicted, its batcher retired
    assert cache.keys() == ["v2"] and first.batcher._retired and not second.batcher._retired
    assert cache.peek("v1") is None and cache.peek("v2") is second
