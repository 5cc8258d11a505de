"""Artifacts written before engine v2 (spec_version 1, fixture made by the old code at commit 622fb33, see
fixtures/make_v1_artifact.py) still load and predict identically: raw outputs bit-for-bit, decoded JSON equal."""

import json
from pathlib import Path

import numpy as np

from service.ml.inference import Predictor

FIX = Path(__file__).parent / "fixtures"


def test_v1_artifact_predicts_identically():
    inputs = np.load(FIX / "v1_inputs.npz")["images"]
    pred = Predictor.load(FIX / "v1_artifact")
    outputs = pred.outputs(inputs)
    expected = np.load(FIX / "v1_outputs.npz")
    assert set(outputs) == set(expected.files)
    for name in expected.files:
        np.testing.assert_array_equal(outputs[name], expected[name], err_msg=name)
    got = json.loads(json.dumps(pred.predict_arrays(inputs, raw=True), sort_keys=True))
    assert got == json.loads((FIX / "v1_predictions.json").read_text())
    # the fixture exercises both gate outcomes
    assert {r["size"]["gated"] for r in got} == {True, False}
