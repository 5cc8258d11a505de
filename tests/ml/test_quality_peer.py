"""bench/quality_peer.py's verdict rule (the Keras half needs the `bench` extra and is not run here): a difference
of the means beyond the larger seed sd is "beats"/"worse than", within it "matches"; RMSE is lower-is-better."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")
from bench.quality_peer import summary, verdicts  # noqa: E402


def runs(digit, large, ink):
    return [{"digit": {"accuracy": d}, "is_large": {"accuracy": b}, "ink": {"rmse": r}}
            for d, b, r in zip(digit, large, ink, strict=True)]


def test_verdict_per_head_against_the_seed_spread():
    hw = summary(runs([0.98, 0.982, 0.984], [0.95, 0.95, 0.95], [0.06, 0.07, 0.08]))
    peer = summary(runs([0.983, 0.985, 0.981], [0.97, 0.975, 0.98], [0.15, 0.17, 0.19]))
    assert hw["digit"]["mean"] == pytest.approx(0.982) and hw["digit"]["sd"] == pytest.approx(0.002)
    v = verdicts(hw, peer)
    assert v["digit"]["verdict"] == "Headwise matches Keras"  # -0.001, noise 0.002
    assert v["is_large"]["verdict"] == "Headwise worse than Keras"  # -0.025, noise 0.005
    assert v["ink"]["verdict"] == "Headwise beats Keras"  # RMSE 0.07 vs 0.17, noise 0.02
    assert v["ink"]["diff"] == pytest.approx(0.10)
