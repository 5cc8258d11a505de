"""Trainer: frozen heads without labels, gating, determinism, resume, early stopping, split, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.ml import train as T
from service.ml.data import Labels, TrainingData
from service.ml.spec import SpecError, parse_spec

TIMING = ("seconds", "images_per_second")


def tiny_spec(**training) -> dict:
    return {
        "tasks": [
            {"name": "category", "type": "multiclass", "classes": ["none", "circle", "square"]},
            {"name": "is_big", "type": "binary"},
            {
                "name": "size",
                "type": "regression",
                "gate": {"task": "category", "classes": ["circle", "square"]},
            },
            {"name": "hue", "type": "regression"},
        ],
        "weighting": {"strategy": "uncertainty"},
        "model": {"image_size": 16, "channels": 3, "width": 8, "depth": 1, "dropout": 0.1, "head_hidden": 8},
        "training": {
            "epochs": 3,
            "batch_size": 16,
            "val_fraction": 0.25,
            "seed": 3,
            "weight_decay": 0.01,
            **training,
        },
    }


def make_data(n: int = 48, seed: int = 0) -> TrainingData:
    """Images whose brightness carries the labels a bit, so training has something to learn."""
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 3, n)
    size = rng.normal(10.0, 3.0, n).astype(np.float32)
    images = rng.integers(0, 80, (n, 16, 16, 3)).astype(np.uint8)
    images[:, 4:12, 4:12, :] += (cat[:, None, None, None] * 50).astype(np.uint8)
    big = (size > 10).astype(np.float32)
    hue = rng.random(n).astype(np.float32)
    return TrainingData(
        images=images,
        labels={
            "category": Labels(cat.astype(np.int64), np.ones(n, bool)),
            "is_big": Labels(big, rng.random(n) < 0.7),
            "size": Labels(np.where(cat > 0, size, 0).astype(np.float32), cat > 0),
            "hue": Labels(np.where(rng.random(n) < 0.15, hue, 0).astype(np.float32), rng.random(n) < 0.15),
        },
    )


def strip_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in item.items() if k not in TIMING} for item in history]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- a head with no labels does not move
def test_all_missing_batch_leaves_head_and_log_variance_bit_identical_under_adamw():
    spec = parse_spec(tiny_spec(weight_decay=0.1))
    data = make_data()
    run = T._Run(spec, data, torch.device("cpu"))
    run.model.train()
    labelled_idx = np.flatnonzero(data.labels["hue"].mask)
    missing_idx = np.flatnonzero(~data.labels["hue"].mask)[:16]
    full = torch.from_numpy(labelled_idx)
    for _ in range(3):  # momentum and second moments of every head become nonzero
        run.step(full, run.data.mask_matrix[labelled_idx].sum(axis=0), None)
    state = run.opt.state[run.model.head_parameters("hue")[0]]
    assert state["exp_avg"].abs().sum() > 0
    head_before = [p.detach().clone() for p in run.model.head_parameters("hue")]
    logvar_before = run.weighting.parameters_for("hue")[0].detach().clone()
    trunk_before = [p.detach().clone() for p in run.model.trunk_parameters()]
    other_before = [p.detach().clone() for p in run.model.head_parameters("category")]

    cnt = run.data.mask_matrix[missing_idx].sum(axis=0)
    assert cnt[spec.task_names.index("hue")] == 0 and cnt.sum() > 0
    losses = run.step(torch.from_numpy(missing_idx), cnt, None)

    assert float(losses["hue"].detach()) == 0.0
    assert all(torch.isfinite(v) for v in losses.values())
    for before, p in zip(head_before, run.model.head_parameters("hue"), strict=True):
        assert torch.equal(before, p.detach())
    assert torch.equal(logvar_before, run.weighting.parameters_for("hue")[0].detach())
    assert any(
        not torch.equal(b, p.detach())
        for b, p in zip(trunk_before, run.model.trunk_parameters(), strict=True)
    )
    assert any(
        not torch.equal(b, p.detach())
        for b, p in zip(other_before, run.model.head_parameters("category"), strict=True)
    )


def test_head_without_any_training_label_keeps_its_initial_weights():
    data = make_data()
    data.labels["hue"] = Labels(np.zeros(48, np.float32), np.zeros(48, bool))
    spec = parse_spec(tiny_spec(epochs=2))
    init = T._Run(spec, data, torch.device("cpu")).model  # same seed -> same initial weights
    result = T.train(spec, data, device="cpu")
    for name, value in init.heads[spec.task_names.index("hue")].state_dict().items():
        assert torch.equal(result.state_dict[f"heads.3.{name}"], value)
    assert all(item["train"]["hue"] == {"loss": None, "labelled": 0} for item in result.history)
    assert result.history[-1]["val"]["hue"]["labelled"] == 0


# ---------------------------------------------------------------- gating in training
def test_gated_head_trains_only_where_gate_is_not_known_negative():
    data = make_data()
    cat = data.labels["category"].values
    # label "size" everywhere, including gate violations (category 'none') and a sample with unknown category
    data.labels["size"] = Labels(np.full(48, 7.0, np.float32), np.ones(48, bool))
    data.labels["category"].mask[:4] = False
    spec = parse_spec(tiny_spec(epochs=1))
    run = T._Run(spec, data, torch.device("cpu"))
    expected = np.ones(48, bool) & ~(data.labels["category"].mask & (cat == 0))
    assert np.array_equal(run.eff["size"], expected)
    result = T.train(spec, data, device="cpu")
    assert result.history[0]["train"]["size"]["labelled"] == int(expected[run.train_idx].sum())
    assert result.history[0]["val"]["size"]["labelled"] == int(expected[run.val_idx].sum())


def test_on_step_reports_labelled_counts_that_add_up():
    spec = parse_spec(tiny_spec(epochs=1))
    seen = []
    result = T.train(spec, make_data(), device="cpu", on_step=seen.append)
    # 36 training samples, batch 16: 16 + 20 (on CPU a last batch under MIN_CPU_BATCH joins the one before)
    assert len(seen) == 2 and {"epoch", "step", "steps", "labelled"} <= seen[0].keys()
    assert seen[-1]["steps"] == 2
    assert result.metrics["precision"]["device"] == "cpu" and result.metrics["precision"]["channels_last"]
    for t in spec.task_names:
        assert sum(s["labelled"][t] for s in seen) == result.history[0]["train"][t]["labelled"]


# ---------------------------------------------------------------- determinism, resume, cancel
def test_same_seed_gives_identical_weights_and_history():
    spec = parse_spec(tiny_spec(epochs=2, augmentation={"hflip": True, "crop": 2}))
    a = T.train(spec, make_data(), device="cpu")
    b = T.train(spec, make_data(), device="cpu")
    assert_same_state(a.state_dict, b.state_dict)
    assert strip_timing(a.history) == strip_timing(b.history)
    c = T.train(parse_spec(tiny_spec(epochs=2, seed=4, augmentation={"hflip": True, "crop": 2})), make_data())
    assert not torch.equal(a.state_dict["stem.0.weight"], c.state_dict["stem.0.weight"])


def test_resume_after_cancel_matches_uninterrupted_run(tmp_path):
    raw = tiny_spec(epochs=3, augmentation={"hflip": True, "crop": 1})
    raw["weighting"] = {"strategy": "dwa"}
    spec = parse_spec(raw)
    full = T.train(spec, make_data(), device="cpu", checkpoint_dir=tmp_path / "a")

    calls = {"n": 0}
    epochs_seen = []

    def stop_in_epoch_two():
        calls["n"] += 1
        return calls["n"] > 2 + 1  # 2 steps per epoch (16 + 20 samples): cancel at the 2nd step of epoch 2

    with pytest.raises(T.TrainingCancelled):
        T.train(
            spec,
            make_data(),
            device="cpu",
            checkpoint_dir=tmp_path / "b",
            should_stop=stop_in_epoch_two,
            on_epoch=epochs_seen.append,
        )
    assert [e["epoch"] for e in epochs_seen] == [1]
    ck = torch.load(tmp_path / "b" / T.CHECKPOINT, weights_only=True)
    assert ck["epoch"] == 1
    resumed = T.train(spec, make_data(), device="cpu", checkpoint_dir=tmp_path / "b")
    assert_same_state(full.state_dict, resumed.state_dict)
    assert strip_timing(full.history) == strip_timing(resumed.history)
    assert full.best_epoch == resumed.best_epoch and full.weighting == resumed.weighting
    # a finished checkpoint returns the same result without training again
    again = T.train(spec, make_data(), device="cpu", checkpoint_dir=tmp_path / "b", should_stop=lambda: True)
    assert_same_state(full.state_dict, again.state_dict)


def test_checkpoint_of_a_different_spec_is_refused(tmp_path):
    T.train(parse_spec(tiny_spec(epochs=1)), make_data(), device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different spec"):
        T.train(parse_spec(tiny_spec(epochs=2)), make_data(), device="cpu", checkpoint_dir=tmp_path)


def test_cancel_without_checkpoint_raises():
    with pytest.raises(T.TrainingCancelled):
        T.train(parse_spec(tiny_spec()), make_data(), device="cpu", should_stop=lambda: True)


# ---------------------------------------------------------------- early stopping, best epoch
def test_early_stopping_keeps_best_epoch():
    spec = parse_spec(
        tiny_spec(
            epochs=30,
            learning_rate=0.05,
            schedule="none",
            early_stopping={"metric": "val_loss", "patience": 2},
        )
    )
    result = T.train(spec, make_data(), device="cpu")
    n = len(result.history)
    assert n < 30 and n == result.best_epoch + 2
    losses = [h["val_loss"] for h in result.history]
    assert losses[result.best_epoch - 1] == min(losses)
    assert result.metrics["val_loss"] == min(losses)
    assert result.metrics["tasks"] == result.history[result.best_epoch - 1]["val"]


def test_early_stopping_on_task_metric_and_bad_metric_name():
    spec = parse_spec(tiny_spec(epochs=4, early_stopping={"metric": "category.accuracy", "patience": 1}))
    result = T.train(spec, make_data(), device="cpu")
    accs = [h["val"]["category"]["accuracy"] for h in result.history]
    assert accs[result.best_epoch - 1] == max(accs)
    with pytest.raises(SpecError, match="category.*allowed"):
        T.train(parse_spec(tiny_spec(early_stopping={"metric": "category.rmse"})), make_data(), device="cpu")


# ---------------------------------------------------------------- split, normalisation, augmentation
def test_stratified_split_is_seeded_and_balanced():
    spec = parse_spec(tiny_spec())
    data = make_data(n=200)
    tr, va = T.stratified_split(spec, data)
    tr2, va2 = T.stratified_split(spec, data)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert len(va) == 50 and len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 200
    cat = data.labels["category"].values
    for c in range(3):
        assert abs((cat[va] == c).sum() - 0.25 * (cat == c).sum()) <= 1
    other = T.stratified_split(parse_spec(tiny_spec(seed=9)), data)[1]
    assert not np.array_equal(va, other)


def test_regression_standardised_with_labelled_train_samples():
    spec = parse_spec(tiny_spec())
    data = make_data()
    run = T._Run(spec, data, torch.device("cpu"))
    size = data.labels["size"]
    sel = run.train_idx[size.mask[run.train_idx]]
    assert run.norm["size"]["mean"] == pytest.approx(float(size.values[sel].astype(np.float64).mean()))
    assert run.norm["size"]["std"] == pytest.approx(float(size.values[sel].astype(np.float64).std()))
    assert abs(run.data.targets["size"][sel].mean()) < 1e-5


def test_augment_flips_and_shifts_with_zero_padding():
    x = torch.arange(2 * 4 * 5 * 1, dtype=torch.uint8).reshape(2, 4, 5, 1)
    flipped = T.augment(x, True, 0, torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(1))
    g = torch.Generator().manual_seed(1)
    shifted = T.augment(x, False, 2, g)
    g = torch.Generator().manual_seed(1)
    dy = torch.randint(-2, 3, (2, 1), generator=g)
    dx = torch.randint(-2, 3, (2, 1), generator=g)
    for i in range(2):
        padded = torch.nn.functional.pad(x[i, :, :, 0], (2, 2, 2, 2))
        expect = padded[2 + dy[i] : 2 + dy[i] + 4, 2 + dx[i] : 2 + dx[i] + 5]
        assert torch.equal(shifted[i, :, :, 0], expect)


def test_result_fields_and_history_shape():
    spec = parse_spec(tiny_spec(epochs=2))
    r = T.train(spec, make_data(), device="cpu")
    item = r.history[0]
    assert {
        "epoch",
        "lr",
        "seconds",
        "images_per_second",
        "weights",
        "train",
        "val",
        "val_loss",
    } <= item.keys()
    assert item["lr"] == pytest.approx(1e-3) and r.history[1]["lr"] == pytest.approx(0.5e-3)
    assert set(item["val"]["size"]) >= {"loss", "labelled", "rmse", "mae", "e2e_rmse", "gate_miss_rate"}
    assert set(item["val"]["is_big"]) >= {"accuracy", "roc_auc"}
    assert set(r.normalization) == {"size", "hue"} and set(r.weighting) == set(spec.task_names)
    assert all(v.device.type == "cpu" for v in r.state_dict.values())


# ---------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training_runs_and_reports():
    spec = parse_spec(tiny_spec(epochs=2, augmentation={"hflip": True, "crop": 2}))
    r = T.train(spec, make_data(), device="cuda")
    assert all(np.isfinite(h["val_loss"]) for h in r.history)
    assert all(v.device.type == "cpu" for v in r.state_dict.values())
