"""Head types and the loss registry: multilabel (encoding, masked loss, metrics, decoding, gating), the new losses
and composite losses with exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.ml import gating
from service.ml.data import encode_labels, read_table, resolve_spec
from service.ml.inference import Predictor
from service.ml.losses import LOSSES, task_losses
from service.ml.network import MultiTaskCNN
from service.ml.spec import SpecError, parse_spec

LN2, LN4, LN43 = math.log(2), math.log(4), math.log(4 / 3)
ML = parse_spec({"tasks": [{"name": "tags", "type": "multilabel", "classes": ["cat", "outdoor"]},
                           {"name": "n", "type": "regression", "gate": {"task": "tags", "classes": ["cat"]}}]})


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)


def cfg(name, **params):
    return LOSSES[name].config(**params)


def test_multilabel_masked_bce_on_tiny_tensors():
    out = {"tags": torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)], [9.0, 9.0]]),
           "n": torch.zeros(3)}
    targets = {"tags": torch.tensor([[1.0, 1.0], [0.0, 0.0], [float("nan"), 7.0]]), "n": torch.zeros(3)}
    masks = {"tags": torch.tensor([True, True, False]), "n": torch.zeros(3, dtype=torch.bool)}
    loss, count = task_losses(ML, out, targets, masks)["tags"]
    # sigmoid(ln 3) = 3/4: row 0 = (ln2 + ln(4/3)) / 2, row 1 = (ln2 + ln4) / 2, row 2 masked (NaN target)
    assert count == 2
    close(loss, ((LN2 + LN43) / 2 + (LN2 + LN4) / 2) / 2)
    pw = cfg("binary_cross_entropy", pos_weight=[2.0, 1.0])
    close(LOSSES["binary_cross_entropy"].fn(out["tags"][:2], targets["tags"][:2], pw),
          [(2 * LN2 + LN43) / 2, (LN2 + LN4) / 2])
    # focal with gamma 0 is the BCE
    close(LOSSES["focal"].fn(out["tags"][:2], targets["tags"][:2], cfg("focal", gamma=0.0)),
          [(LN2 + LN43) / 2, (LN2 + LN4) / 2])


def test_new_losses_exact_values():
    z, y = torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0])
    close(LOSSES["quantile"].fn(z, y, cfg("quantile", q=0.9)), [0.9, 0.1])  # under-prediction costs q
    close(LOSSES["log_cosh"].fn(torch.tensor([0.0, 1.0, -30.0]), torch.zeros(3), cfg("log_cosh")),
          [0.0, math.log(math.cosh(1.0)), 30.0 - LN2])  # stable for large |d|
    close(LOSSES["smooth_l1"].fn(torch.tensor([1.0, 3.0]), torch.zeros(2), cfg("smooth_l1", beta=2.0)), [0.25, 2.0])
    close(LOSSES["poisson"].fn(torch.tensor([0.0, LN2]), torch.tensor([1.0, 3.0]), cfg("poisson")),
          [1.0, 2.0 - 3 * LN2])


def test_composite_loss_is_weighted_sum_then_masked_mean():
    spec = parse_spec({"tasks": [{"name": "r", "type": "regression",
                                  "loss": [{"type": "mse", "weight": 1.0}, {"type": "mae", "weight": 0.2}]}]})
    out, tgt = torch.tensor([1.0, 2.0, 5.0]), torch.tensor([0.0, 4.0, float("nan")])
    loss, n = task_losses(spec, {"r": out}, {"r": tgt}, {"r": torch.tensor([True, True, False])})["r"]
    close(loss, ((1 + 0.2 * 1) + (4 + 0.2 * 2)) / 2)
    assert n == 2
    with pytest.raises(SpecError, match=r"tasks\[0\].loss: the losses of one head must share an output link"):
        parse_spec({"tasks": [{"name": "r", "type": "regression", "loss": ["mse", "poisson"]}]})
    with pytest.raises(SpecError, match=r"tasks\[0\].loss\[1\].q: .*less than 1"):
        parse_spec({"tasks": [{"name": "r", "type": "regression", "loss": ["mse", {"type": "quantile", "q": 1}]}]})


def test_multilabel_spec_fields_and_errors():
    assert ML.task("tags").threshold == 0.5 and ML.task("tags").loss.type == "binary_cross_entropy"
    with pytest.raises(SpecError, match=r"tasks\[0\].threshold: must be less than 1"):
        parse_spec({"tasks": [{"name": "t", "type": "multilabel", "threshold": 1.0}]})
    with pytest.raises(SpecError, match=r"tasks\[0\].threshold: unknown field"):
        parse_spec({"tasks": [{"name": "t", "type": "binary", "threshold": 0.3}]})
    with pytest.raises(SpecError, match=r"tasks\[0\].loss.pos_weight: 3 values for 2 tags"):
        parse_spec({"tasks": [{"name": "t", "type": "multilabel", "classes": ["a", "b"],
                               "loss": {"type": "binary_cross_entropy", "pos_weight": [1, 2, 3]}}]})
    with pytest.raises(SpecError, match=r"tasks\[1\].gate.classes: required"):
        parse_spec({"tasks": [{"name": "t", "type": "multilabel"}, {"name": "r", "type": "regression",
                                                                     "gate": {"task": "t"}}]})


@pytest.mark.parametrize("labels", ["csv", "jsonl"])
def test_multilabel_encoding_from_csv_and_jsonl(make_zip_dataset, labels):
    cells = ["cat|outdoor", None, [], ["outdoor"]] if labels == "jsonl" else ["cat|outdoor", None, "[]", "outdoor"]
    rows = [{"image": f"img/{i}.png", "tags": c, "n": str(i)} for i, c in enumerate(cells)]
    table = read_table(make_zip_dataset(rows, labels=labels))
    spec = resolve_spec(parse_spec({"tasks": [{"name": "tags", "type": "multilabel"}]}), table)
    assert spec.task("tags").classes == ["cat", "outdoor"]
    lab = encode_labels(spec, table)["tags"]
    assert lab.mask.tolist() == [True, False, True, True]
    assert lab.values.tolist() == [[1, 1], [0, 0], [0, 0], [0, 1]]


def test_multilabel_bad_tag_names_row_and_column(make_zip_dataset):
    from service.ml.data import DataError

    rows = [{"image": "img/0.png", "tags": "cat"}, {"image": "img/1.png", "tags": "dog|cat"}]
    table = read_table(make_zip_dataset(rows))
    spec = parse_spec({"tasks": [{"name": "tags", "type": "multilabel", "classes": ["cat", "bird"]}]})
    with pytest.raises(SpecError, match="class 'dog' in the data .labels.csv row 2, column 'tags'"):
        resolve_spec(spec, table)
    with pytest.raises(DataError, match="labels.csv row 2, column 'tags': tag 'dog' is not one of the classes"):
        encode_labels(spec, table)


def test_multilabel_metrics_decoding_and_gating():
    head = ML.task("tags").head
    y = np.array([[1, 0], [1, 1], [0, 0]], dtype=np.float32)
    p = np.array([[0.9, 0.2], [0.4, 0.8], [0.1, 0.7]])
    s = head.scores(ML.task("tags"), y, p)
    # predicted [[1,0],[0,1],[0,1]]: tp = [1, 1], fp = [0, 1], fn = [1, 0] -> micro 4 / 6, macro (2/3 + 2/3) / 2
    assert s["micro_f1"] == pytest.approx(4 / 6) and s["macro_f1"] == pytest.approx(2 / 3)
    # AP(cat) = (1 + 1) / 2 = 1 ; AP(outdoor): order 0.8 (pos), 0.7 (neg) -> 1.0
    assert s["mean_average_precision"] == pytest.approx(1.0)
    gates = gating.predicted_gates(ML, {"tags": p, "n": np.zeros(3)})
    assert gates["n"][0].tolist() == [True, False, False]
    assert gates["n"][1][1] == "tags predicted none of: cat"
    neg = gating.known_negative(ML, {"tags": y, "n": np.zeros(3)}, {"tags": np.ones(3, bool), "n": np.ones(3, bool)})
    assert neg["n"].tolist() == [False, False, True]


def test_multilabel_prediction_output():
    torch.manual_seed(0)
    spec = parse_spec({**ML.to_json_dict(), "model": {"image_size": 8, "width": 4, "depth": 1, "head_hidden": 4}})
    net = MultiTaskCNN(spec)
    with torch.no_grad():
        net.heads[0][-1].bias.copy_(torch.tensor([2.0, -2.0]))  # cat likely, outdoor unlikely
    pred = Predictor(spec, net.state_dict(), {"n": {"mean": 0.0, "std": 1.0}})
    out = pred.predict_arrays(np.zeros((1, 8, 8, 3), np.uint8), raw=True)[0]
    assert out["tags"]["labels"] == ["cat"] and set(out["tags"]["probabilities"]) == {"cat", "outdoor"}
    assert out["tags"]["raw"] == ["cat"] and out["n"]["gated"] is False


def test_multilabel_head_report_renders_tag_sets():
    """The worker's per-head report (service/reports/plots.py) handles a multilabel head: tag sets are the classes."""
    from service.ml.data import Labels
    from service.reports import plots

    spec = parse_spec({"tasks": [{"name": "tags", "type": "multilabel", "classes": ["cat", "outdoor"]}]})
    labels = {"tags": Labels(np.array([[1, 1], [0, 0], [1, 0]], np.float32), np.array([True, True, False]))}
    preds = [{"tags": {"labels": ["cat", "outdoor"]}}, {"tags": {"labels": ["cat"]}}, {"tags": {"labels": []}}]
    assert [plots._class_name(spec.task("tags"), v) for v in labels["tags"].values] == [
        "cat|outdoor", "(no tag)", "cat"]
    assert [plots._pred_name(spec.task("tags"), p["tags"]) for p in preds] == ["cat|outdoor", "cat", "(no tag)"]
    png = plots.task_png(spec, labels, np.arange(3), preds, "tags")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
