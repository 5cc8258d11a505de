"""Artifacts written before engine v2 (spec_version 1, fixture made by the old code at commit 622fb33, see
fixtures/make_v1_artifact.py) still load and predict identically: labels, gates and reasons equal, numbers equal to
float32 rounding (not bit-for-bit: the fixture was computed on another CPU, and oneDNN's kernels -- AVX-512 vs
AMX -- sum in a different order; seen: 1.5e-08 on a sigmoid)."""

import json
from pathlib import Path

import numpy as np
import pytest

from service.ml.inference import Predictor

FIX = Path(__file__).parent / "fixtures"


def test_v1_artifact_predicts_identically():
    inputs = np.load(FIX / "v1_inputs.npz")["images"]
    pred = Predictor.load(FIX / "v1_artifact")
    outputs = pred.outputs(inputs)
    expected = np.load(FIX / "v1_outputs.npz")
    assert set(outputs) == set(expected.files)
    for name in expected.files:
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
    got = json.loads(json.dumps(pred.predict_arrays(inputs, raw=True), sort_keys=True))
    assert got == approx_floats(json.loads((FIX / "v1_predictions.json").read_text()))
    # the fixture exercises both gate outcomes
    assert {r["size"]["gated"] for r in got} == {True, False}


def approx_floats(value):
    """`value` with every float replaced by pytest.approx (rel 1e-6); strings, bools, None and ints stay exact."""
    if isinstance(value, dict):
        return {k: approx_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx_floats(v) for v in value]
    return pytest.approx(value, rel=1e-6, abs=1e-7) if isinstance(value, float) else value
