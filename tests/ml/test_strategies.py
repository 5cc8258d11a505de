"""Weighting strategies: GradNorm against a hand computation, PCGrad on known conflicting gradients, and for every
strategy: an all-missing batch leaves that head and its strategy state bit-identical, resume is bit-identical."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.ml import train as T
from service.ml.spec import parse_spec
from service.ml.weighting import STRATEGIES, make_weighting
from service.ml.weighting.pcgrad import project_conflicting
from tests.ml.test_train import assert_same_state, make_data, strip_timing, tiny_spec

ALL = list(STRATEGIES)
TWO = parse_spec({"tasks": [{"name": "a", "type": "regression"}, {"name": "b", "type": "regression"}],
                  "weighting": {"strategy": "gradnorm", "alpha": 1.5, "weight_lr": 0.025}})


def adam_step(w: float, grads: list[float], lr: float, b1=0.9, b2=0.999, eps=1e-8) -> float:
    """Hand-rolled Adam over a gradient sequence (bias-corrected), for one scalar."""
    m = v = 0.0
    for t, g in enumerate(grads, 1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
    return w


def test_gradnorm_weights_after_two_steps_match_hand_computation():
    s = make_weighting(TWO)
    W = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    s.layer = [W]
    # step 1: L_a = 2 W0 + W1 = 4 (grad [2, 1], |.| = sqrt 5), L_b = W0 = 1 (grad [1, 0], |.| = 1); L(0) = these
    la, lb = 2 * W[0] + W[1], W[0] * 1.0
    s.backward({"a": la, "b": lb}, {"a": 3, "b": 3}, [W])
    r5 = math.sqrt(5)
    # r = 1 for both; G = [sqrt5, 1]; target = mean(G); dL_grad/dw = sign(G - target) * |grad L|
    assert [float(p.grad) for p in s.task_weights] == pytest.approx([r5, -1.0])
    assert W.grad.tolist() == pytest.approx([3.0, 1.0])  # the network gets w(t) = 1 times each task gradient
    s.after_step()
    w1 = [adam_step(1.0, [r5], 0.025), adam_step(1.0, [-1.0], 0.025)]
    w1 = [x * 2 / sum(w1) for x in w1]  # renormalised to the number of tasks
    assert s.weights() == pytest.approx({"a": w1[0], "b": w1[1]}, abs=1e-6)
    # step 2: L_a = 1 (ratio 1/4), L_b = 1 (ratio 1): r = [0.4, 1.6]
    W.grad = None
    la2, lb2 = 0.5 * W[1] * 1.0, W[0] * 1.0
    s.backward({"a": la2, "b": lb2}, {"a": 2, "b": 2}, [W])
    g = [w1[0] * 0.5, w1[1] * 1.0]  # G_i = w_i |grad L_i|
    r = [0.4, 1.6]
    target = [(g[0] + g[1]) / 2 * ri**1.5 for ri in r]
    dw = [math.copysign(1, g[0] - target[0]) * 0.5, math.copysign(1, g[1] - target[1]) * 1.0]
    assert [float(p.grad) for p in s.task_weights] == pytest.approx(dw)
    assert W.grad.tolist() == pytest.approx([w1[1], 0.5 * w1[0]])
    s.after_step()
    w2 = [adam_step(1.0, [r5, dw[0]], 0.025), adam_step(1.0, [-1.0, dw[1]], 0.025)]
    w2 = [x * 2 / sum(w2) for x in w2]
    assert s.weights() == pytest.approx({"a": w2[0], "b": w2[1]}, abs=1e-6)
    assert sum(s.weights().values()) == pytest.approx(2.0)


def test_gradnorm_inactive_task_weight_and_state_do_not_move():
    s = make_weighting(TWO)
    W = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    s.layer = [W]
    s.backward({"a": 2 * W[0] + W[1], "b": W[0] * 1.0}, {"a": 3, "b": 3}, [W])
    s.after_step()
    before = {k: v.clone() for k, v in s.state_dict().items() if torch.is_tensor(v)}
    b_state = {k: v.clone() for k, v in s.opt.state[s.task_weights[1]].items()}
    W.grad = None
    s.backward({"a": 3 * W[0] * 1.0, "b": W[1] * 0.0}, {"a": 4, "b": 0}, [W])
    assert s.task_weights[1].grad is None and W.grad.tolist() == pytest.approx([3 * float(s.task_weights[0].detach()), 0])
    s.after_step()
    after = s.state_dict()
    assert torch.equal(after["task_weights.1"], before["task_weights.1"])
    assert torch.equal(after["initial_losses"], before["initial_losses"])
    assert all(torch.equal(v, s.opt.state[s.task_weights[1]][k]) for k, v in b_state.items())
    assert sum(s.weights().values()) == pytest.approx(2.0)


def test_pcgrad_projects_two_known_conflicting_gradients():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # g1 . g2 = -1 < 0
    # g1' = g1 - (-1 / 2) g2 = [0.5, 0.5]; g2' = g2 - (-1 / 1) g1 = [0, 1]; sum = [0.5, 1.5]
    assert project_conflicting(g, torch.Generator().manual_seed(0)).tolist() == [0.5, 1.5]
    agree = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # no conflict: plain sum
    assert project_conflicting(agree, torch.Generator().manual_seed(0)).tolist() == [2.0, 1.0]


def test_pcgrad_strategy_shared_gets_projection_heads_keep_own_grads():
    spec = parse_spec({**TWO.to_json_dict(), "weighting": {"strategy": "pcgrad"}})
    s = make_weighting(spec)
    shared = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    ha, hb = torch.nn.Parameter(torch.tensor(2.0)), torch.nn.Parameter(torch.tensor(3.0))
    la = ha * shared[0]                      # grad shared [2, 0]
    lb = hb * (shared[1] - shared[0]) / 3    # grad shared [-1, 1]
    s.backward({"a": la, "b": lb}, {"a": 1, "b": 1}, [shared])
    # g_a' = [2, 0] - (-2 / 2) [-1, 1] = [1, 1]; g_b' = [-1, 1] - (-2 / 4) [2, 0] = [0, 1]
    assert shared.grad.tolist() == pytest.approx([1.0, 2.0])
    assert float(ha.grad) == pytest.approx(1.0) and float(hb.grad) == pytest.approx(0.0)


@pytest.mark.parametrize("strategy", ALL)
def test_all_missing_batch_leaves_head_and_strategy_state_bit_identical(strategy):
    raw = tiny_spec(weight_decay=0.1)
    raw["weighting"] = {"strategy": strategy}
    _all_missing_check(parse_spec(raw))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ALL)
def test_all_missing_batch_bit_identical_with_compile(strategy):
    """training.compile on CPU, every strategy (gradnorm: autograd.grad through the compiled graph; pcgrad: one
    backward per task). Compiling costs tens of seconds per strategy on 2 cores, hence slow."""
    raw = tiny_spec(weight_decay=0.1, compile=True)
    raw["weighting"] = {"strategy": strategy}
    _all_missing_check(parse_spec(raw))


def _all_missing_check(spec):
    data = make_data()
    run = T.Run(spec, data, torch.device("cpu"))
    run.model.train()
    labelled = np.flatnonzero(data.labels["hue"].mask)
    missing = np.flatnonzero(~data.labels["hue"].mask)[:16]
    for _ in range(3):  # momentum, second moments and strategy state of every head become nonzero
        run.step(torch.from_numpy(labelled), run.data.mask_matrix[labelled].sum(axis=0), None)
    head = run.model.head_parameters("hue") + run.weighting.parameters_for("hue")
    before = [p.detach().clone() for p in head]
    state_before = {k: v.clone() for k, v in run.weighting.state_dict().items() if torch.is_tensor(v)}
    hue = run.spec.task_names.index("hue")
    trunk_before = [p.detach().clone() for p in run.model.trunk_parameters()]
    cnt = run.data.mask_matrix[missing].sum(axis=0)
    assert cnt[hue] == 0 and cnt.sum() > 0
    losses = run.step(torch.from_numpy(missing), cnt, None)
    assert float(losses["hue"].detach()) == 0.0 and all(torch.isfinite(v) for v in losses.values())
    assert all(torch.equal(b, p.detach()) for b, p in zip(before, head, strict=True))
    for key, value in run.weighting.state_dict().items():
        if torch.is_tensor(value) and value.dim() == 1 and len(value) == len(run.spec.tasks):
            assert torch.equal(value[hue], state_before[key][hue]), key  # per-task buffers (dwa, gradnorm)
        elif key.endswith(f".{hue}"):
            assert torch.equal(value, state_before[key]), key  # per-task parameters
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert any(not torch.equal(b, p.detach()) for b, p in zip(trunk_before, run.model.trunk_parameters(),
                                                              strict=True))


@pytest.mark.parametrize("strategy", ALL)
def test_resume_is_bit_identical(strategy, tmp_path):
    raw = tiny_spec(epochs=3, augmentation={"hflip": True, "crop": 1})
    raw["weighting"] = {"strategy": strategy}
    spec = parse_spec(raw)
    full = T.train(spec, make_data(), device="cpu", checkpoint_dir=tmp_path / "a")
    calls = {"n": 0}

    def stop_in_epoch_two():
        calls["n"] += 1
        return calls["n"] > 2 + 1  # 2 steps per epoch: cancel at the 2nd step of epoch 2

    with pytest.raises(T.TrainingCancelled):
        T.train(spec, make_data(), device="cpu", checkpoint_dir=tmp_path / "b", should_stop=stop_in_epoch_two)
    resumed = T.train(spec, make_data(), device="cpu", checkpoint_dir=tmp_path / "b")
    assert_same_state(full.state_dict, resumed.state_dict)
    assert strip_timing(full.history) == strip_timing(resumed.history)
    assert full.weighting == resumed.weighting
