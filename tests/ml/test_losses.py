import math

import numpy as np
import pytest
import torch

from service.ml import gating
from service.ml.losses import LOSSES, task_losses
from service.ml.spec import (
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    FocalLoss,
    HuberLoss,
    MAELoss,
    MSELoss,
    SpecError,
    parse_spec,
)
from service.ml.weighting import make_weighting
from service.ml.weighting.dwa import DWA as DWAWeighting
from service.ml.weighting.fixed import Fixed as FixedWeighting
from service.ml.weighting.uncertainty import Uncertainty as UncertaintyWeighting


class _Fns(dict):
    def __getitem__(self, name):
        return LOSSES[name].fn


FN = _Fns()


def combine(w, losses):
    return w.combine({n: v[0] for n, v in losses.items()}, {n: v[1] for n, v in losses.items()})


LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
LN43 = math.log(4 / 3)  # -log(3/4)


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ per-sample losses
def test_cross_entropy_and_label_smoothing():
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])  # softmax = [1/4, 3/4]
    target = torch.tensor([1, 0])
    close(FN["cross_entropy"](logits, target, CrossEntropyLoss()), [LN43, LN4])
    # eps=0.2, K=2: target distribution [0.1, 0.9] for class 1
    close(FN["cross_entropy"](logits[:1], target[:1], CrossEntropyLoss(label_smoothing=0.2)),
          [0.1 * LN4 + 0.9 * LN43])


def test_binary_cross_entropy_and_pos_weight():
    logits = torch.tensor([0.0, 0.0, LN3])
    target = torch.tensor([1.0, 0.0, 1.0])
    close(FN["binary_cross_entropy"](logits, target, BinaryCrossEntropyLoss()), [LN2, LN2, LN43])
    close(FN["binary_cross_entropy"](logits, target, BinaryCrossEntropyLoss(pos_weight=3.0)),
          [3 * LN2, LN2, 3 * LN43])


def test_focal_binary_gamma_and_alpha():
    logits = torch.tensor([0.0, 0.0, LN3])  # p = 0.5, 0.5, 0.75
    target = torch.tensor([1.0, 0.0, 1.0])
    close(FN["focal"](logits, target, FocalLoss(gamma=2.0)), [0.25 * LN2, 0.25 * LN2, 0.0625 * LN43])
    close(FN["focal"](logits, target, FocalLoss(gamma=2.0, alpha=0.25)),
          [0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2, 0.25 * 0.0625 * LN43])
    close(FN["focal"](logits, target, FocalLoss(gamma=0.0)), [LN2, LN2, LN43])


def test_focal_multiclass_gamma_and_alpha():
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])  # p = [1/4, 3/4]
    target = torch.tensor([1, 0])
    close(FN["focal"](logits, target, FocalLoss(gamma=2.0)), [0.0625 * LN43, 0.5625 * LN4])
    close(FN["focal"](logits, target, FocalLoss(gamma=1.0, alpha=0.5)), [0.5 * 0.25 * LN43, 0.5 * 0.75 * LN4])
    close(FN["focal"](logits, target, FocalLoss(gamma=0.0)),
          FN["cross_entropy"](logits, target, CrossEntropyLoss()).tolist())


def test_regression_losses_and_huber_delta():
    out = torch.tensor([1.0, 2.0, 0.0])
    target = torch.tensor([0.0, 4.0, 3.0])  # |d| = 1, 2, 3
    close(FN["mse"](out, target, MSELoss()), [1.0, 4.0, 9.0])
    close(FN["mae"](out, target, MAELoss()), [1.0, 2.0, 3.0])
    close(FN["huber"](out, target, HuberLoss()), [0.5, 1.5, 2.5])
    close(FN["huber"](out, target, HuberLoss(delta=2.0)), [0.5, 2.0, 4.0])


def test_unknown_loss_lists_valid_names():
    with pytest.raises(SpecError, match="tasks.0..loss: 'hinge' is not a loss; allowed: mse, mae, huber"):
        parse_spec({"tasks": [{"name": "r", "type": "regression", "loss": "hinge"}]})


# ------------------------------------------------------------ masked task losses
SPEC = parse_spec({"tasks": [
    {"name": "cat", "type": "multiclass", "classes": ["none", "cat", "dog"],
     "loss": {"type": "cross_entropy", "label_smoothing": 0.0}},
    {"name": "tail", "type": "binary", "gate": {"task": "cat", "classes": ["cat", "dog"]}},
    {"name": "len", "type": "regression", "gate": {"task": "tail"}, "weight": 2.0},
]})


def test_masked_mean_over_labelled_rows_ignores_garbage():
    outputs = {
        "cat": torch.tensor([[0.0, LN3, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]),
        "tail": torch.tensor([0.0, LN3, 80.0]),
        "len": torch.tensor([1.0, 2.0, 3.0], requires_grad=True),
    }
    targets = {
        "cat": torch.tensor([1, 1, -1]),               # row 2 unlabelled, garbage index
        "tail": torch.tensor([1.0, 1.0, float("nan")]),
        "len": torch.tensor([0.0, 4.0, float("nan")]),
    }
    masks = {
        "cat": torch.tensor([True, True, False]),
        "tail": torch.tensor([True, True, False]),
        "len": torch.tensor([True, True, False]),
    }
    losses = task_losses(SPEC, outputs, targets, masks)
    # softmax([0, ln3, 0]) = [1/5, 3/5, 1/5]; softmax([0,0,0]) = 1/3 each
    close(losses["cat"][0], (math.log(5 / 3) + LN3) / 2)
    close(losses["tail"][0], (LN2 + LN43) / 2)
    close(losses["len"][0], (1.0 + 4.0) / 2)
    assert [c for _, c in losses.values()] == [2, 2, 2]
    losses["len"][0].backward()
    assert outputs["len"].grad.tolist() == [1.0, -2.0, 0.0]  # d/do of (o - t)^2 / 2 on labelled rows


def test_all_missing_batch_gives_exact_zero_and_zero_grad():
    outputs = {
        "cat": torch.randn(2, 3, requires_grad=True),
        "tail": torch.tensor([100.0, -100.0], requires_grad=True),
        "len": torch.randn(2, requires_grad=True),
    }
    targets = {"cat": torch.tensor([-1, 7]), "tail": torch.tensor([float("nan")] * 2),
                "len": torch.tensor([float("nan"), float("inf")])}
    masks = {n: torch.zeros(2, dtype=torch.bool) for n in SPEC.task_names}
    for loss_cfg in ("focal", "binary_cross_entropy"):
        spec = parse_spec({**SPEC.to_json_dict(), "tasks": [
            {**t, "loss": loss_cfg} if t["type"] == "binary" else t for t in SPEC.to_json_dict()["tasks"]]})
        losses = task_losses(spec, outputs, targets, masks)
        for loss, count in losses.values():
            assert count == 0 and loss.item() == 0.0
        torch.stack([loss for loss, _ in losses.values()]).sum().backward()
        for name, out in outputs.items():
            assert torch.isfinite(out.grad).all() and not out.grad.any(), name
            out.grad = None
    total = combine(FixedWeighting(SPEC), task_losses(SPEC, outputs, targets, masks))
    assert total.item() == 0.0 and total.requires_grad
    total.backward()
    assert all(not o.grad.any() for o in outputs.values())


def test_focal_saturated_output_has_finite_grad_with_small_gamma():
    spec = parse_spec({"tasks": [{"name": "b", "type": "binary", "loss": {"type": "focal", "gamma": 0.5}},
                                 {"name": "m", "type": "multiclass", "classes": ["a", "b"],
                                  "loss": {"type": "focal", "gamma": 0.5}}]})
    outputs = {"b": torch.tensor([200.0, -200.0], requires_grad=True),
               "m": torch.tensor([[200.0, -200.0], [0.0, 0.0]], requires_grad=True)}
    targets = {"b": torch.tensor([1.0, 0.0]), "m": torch.tensor([0, 1])}
    masks = {"b": torch.tensor([True, False]), "m": torch.tensor([True, False])}
    losses = task_losses(spec, outputs, targets, masks)
    (losses["b"][0] + losses["m"][0]).backward()
    assert torch.isfinite(outputs["b"].grad).all() and torch.isfinite(outputs["m"].grad).all()


# ------------------------------------------------------------ gating
def test_gate_positive_from_labels_and_predictions():
    assert gating.gate_positive(SPEC, "tail", {"cat": np.array([0, 1, 2])}).tolist() == [False, True, True]
    assert gating.gate_positive(SPEC, "len", {"tail": np.array([0.0, 1.0])}).tolist() == [False, True]
    preds = {"cat": np.array([0, 2]), "tail": np.array([0.4, 0.5]), "len": np.array([1.0, 2.0])}
    gates = gating.predicted_gates(SPEC, preds)
    assert gates["tail"][0].tolist() == [False, True] and gates["tail"][1] == ["cat predicted 'none'", None]
    assert gates["len"][0].tolist() == [False, True] and gates["len"][1] == ["cat predicted 'none'", None]


def test_effective_masks_with_chain():
    #          row:   0      1      2      3      4      5
    # cat label:     none   cat    dog    ?      none   cat
    # tail label:    ?      1      0      1      ?      ?
    targets = {"cat": torch.tensor([0, 1, 2, 0, 0, 1]), "tail": torch.tensor([0.0, 1, 0, 1, 0, 0]),
               "len": torch.ones(6)}
    masks = {"cat": torch.tensor([1, 1, 1, 0, 1, 1]).bool(), "tail": torch.tensor([0, 1, 1, 1, 0, 0]).bool(),
             "len": torch.ones(6, dtype=torch.bool)}
    eff = gating.effective_masks(SPEC, targets, masks)
    assert eff["cat"].tolist() == [True, True, True, False, True, True]
    assert eff["tail"].tolist() == [False, True, True, True, False, False]
    # len: row 0 & 4 negative through the chain (cat none), row 2 tail known 0; rows 1, 3, 5 stay
    assert eff["len"].tolist() == [False, True, False, True, False, True]
    # a tail label on a 'none' row is dropped (gate violation)
    masks["tail"] = torch.ones(6, dtype=torch.bool)
    assert gating.effective_masks(SPEC, targets, masks)["tail"].tolist() == [False, True, True, True, False, True]


# ------------------------------------------------------------ weighting
def _losses(a, b, count_b=1):
    return {"cat": (torch.tensor(a), 3), "tail": (torch.tensor(0.0), 0), "len": (b, count_b)}


def test_fixed_weighting_excludes_empty_heads():
    w = make_weighting(SPEC)
    assert isinstance(w, FixedWeighting)
    assert w.weights() == {"cat": 1.0, "tail": 1.0, "len": 2.0}
    close(combine(w, _losses(1.5, torch.tensor(0.25))), 1.5 + 2 * 0.25)
    w.end_epoch({"cat": 1.0})
    assert w.parameters_for("cat") == []


def test_uncertainty_weighting_values_and_grads():
    spec = parse_spec({**SPEC.to_json_dict(), "weighting": {"strategy": "uncertainty"}})
    w = make_weighting(spec)
    assert isinstance(w, UncertaintyWeighting)
    assert w.weights() == {"cat": 1.0, "tail": 1.0, "len": 1.0}  # len: weight 2 * 0.5 (regression)
    close(combine(w, _losses(2.0, torch.tensor(4.0))), 2.0 + 2 * 0.5 * 4.0)
    with torch.no_grad():
        w.parameters_for("cat")[0].fill_(LN2)
    total = combine(w, _losses(2.0, torch.tensor(4.0)))
    close(total, 0.5 * 2.0 + 0.5 * LN2 + 2 * 0.5 * 4.0)
    total.backward()
    s_cat, s_tail, s_len = (w.parameters_for(n)[0] for n in SPEC.task_names)
    close(s_cat.grad, -0.5 * 2.0 + 0.5)   # d/ds [exp(-s) L + s/2]
    close(s_len.grad, 2 * (-0.5 * 4.0 + 0.5))
    assert s_tail.grad is None  # head without labels: no gradient at all
    assert w.weights()["cat"] == pytest.approx(0.5)
    state = w.state_dict()
    w2 = make_weighting(spec)
    w2.load_state_dict(state)
    assert w2.weights() == w.weights()


def test_dwa_weighting_history_and_state():
    spec = parse_spec({"tasks": [{"name": "a", "type": "binary"}, {"name": "b", "type": "regression"}],
                       "weighting": {"strategy": "dwa", "temperature": 2.0}})
    w = make_weighting(spec)
    assert isinstance(w, DWAWeighting)
    assert w.weights() == {"a": 1.0, "b": 1.0}
    w.end_epoch({"a": 1.0, "b": 1.0})
    assert w.weights() == {"a": 1.0, "b": 1.0}  # first two epochs: 1
    w.end_epoch({"a": 0.5, "b": 1.0})  # r = [0.5, 1]
    wa = 2 / (1 + math.exp(0.25))
    assert w.weights() == pytest.approx({"a": wa, "b": 2 - wa})
    close(combine(w, {"a": (torch.tensor(1.0), 1), "b": (torch.tensor(3.0), 1)}), wa + 3 * (2 - wa))
    w.end_epoch({"a": 0.25})  # b had no labels: its history is kept, r_b stays 1
    assert w.weights() == pytest.approx({"a": wa, "b": 2 - wa})
    w2 = make_weighting(spec)
    w2.load_state_dict(w.state_dict())
    assert w2.weights() == pytest.approx(w.weights())
    w.end_epoch({"a": 0.25, "b": 0.5})  # r = [1, 0.5]
    w2.end_epoch({"a": 0.25, "b": 0.5})
    assert w.weights() == pytest.approx({"a": 2 - wa, "b": wa})
    assert w2.weights() == pytest.approx(w.weights())


def test_combine_with_no_labels_anywhere_is_zero_and_backward_safe():
    x = torch.tensor(1.0, requires_grad=True)
    for strategy in ("fixed", "uncertainty", "dwa"):
        w = make_weighting(parse_spec({**SPEC.to_json_dict(), "weighting": {"strategy": strategy}}))
        total = combine(w, {"cat": (x * 0, 0), "tail": (x * 0, 0), "len": (x * 0, 0)})
        assert total.item() == 0.0
        total.backward()


def test_head_without_labels_is_not_moved_by_adamw_step():
    from service.ml.network import MultiTaskCNN

    torch.manual_seed(0)
    spec = parse_spec({**SPEC.to_json_dict(), "weighting": {"strategy": "uncertainty"},
                       "model": {"image_size": 8, "width": 4, "depth": 1, "head_hidden": 4}})
    net, weighting = MultiTaskCNN(spec), make_weighting(spec)
    opt = torch.optim.AdamW([*net.parameters(), *weighting.parameters()], lr=0.1, weight_decay=0.1)
    x = torch.rand(4, 3, 8, 8)
    targets = {"cat": torch.tensor([1, 2, 1, 2]), "tail": torch.tensor([1.0, 0, 1, 0]), "len": torch.randn(4)}
    full = {n: torch.ones(4, dtype=torch.bool) for n in spec.task_names}
    for masks in (full, {**full, "tail": torch.zeros(4, dtype=torch.bool)}):
        before = [p.detach().clone() for p in net.head_parameters("tail") + weighting.parameters_for("tail")]
        opt.zero_grad()
        losses = task_losses(spec, net(x), targets, masks)
        combine(weighting, losses).backward()
        opt.step()
        after = net.head_parameters("tail") + weighting.parameters_for("tail")
        moved = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert moved == (losses["tail"][1] > 0)
