"""Training defaults: epochs "auto" (dataset size, time budget), the warm-up schedule, early stopping on by default
with the best epoch's weights kept, and resume across early-stopping state."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import pytest
import torch

from service.api.quotas import check_job_size
from service.ml import spec_settings as S
from service.ml import train as T
from service.ml.spec import SpecError, parse_spec
from service.ml.train import trainer
from service.ml.train.optim import Schedule, warmup_steps
from tests.ml.test_train import assert_same_state, make_data, strip_timing, tiny_spec


# ---------------------------------------------------------------- the spec fields
def test_defaults_and_spellings():
    tc = parse_spec(tiny_spec(epochs="auto")).training
    assert tc.epochs == "auto" and tc.warmup_epochs == 1.0 and tc.max_minutes is None
    assert tc.early_stopping == S.EarlyStopping(metric="val_loss", patience=5)
    assert parse_spec({"tasks": [{"name": "a", "type": "binary"}]}).training.epochs == "auto"
    assert parse_spec(tiny_spec(epochs=7)).training.epochs == 7  # explicit epochs are honoured
    for off in (False, None):
        assert parse_spec(tiny_spec(early_stopping=off)).training.early_stopping is None
    assert parse_spec(tiny_spec(early_stopping=True)).training.early_stopping.patience == 5
    for bad in ("lots", 0, 10001, True, 2.5):
        with pytest.raises(SpecError, match=r'training.epochs: must be "auto" or a whole number from 1 to 10000'):
            parse_spec(tiny_spec(epochs=bad))
    with pytest.raises(SpecError, match="training.max_minutes"):
        parse_spec(tiny_spec(max_minutes=0))


def test_auto_epochs_follow_the_dataset_size_and_the_guard_uses_them():
    visits, lo, hi = S.AUTO_SAMPLE_VISITS, S.AUTO_MIN_EPOCHS, S.AUTO_MAX_EPOCHS
    assert S.auto_epochs(1) == S.auto_epochs(visits // hi) == hi  # small data: the most passes
    assert S.auto_epochs(visits // 20) == 20
    assert S.auto_epochs(visits // 20 + 1) == 20  # rounded up
    assert S.auto_epochs(10**7) == lo  # large data: at least a few passes
    auto, fixed = parse_spec(tiny_spec(epochs="auto")).training, parse_spec(tiny_spec(epochs=3)).training
    assert auto.planned_epochs(visits // 20) == 20 and fixed.planned_epochs(visits // 20) == 3
    assert auto.budget_seconds() == 60 * S.AUTO_MINUTES and fixed.budget_seconds() is None
    assert parse_spec(tiny_spec(epochs=3, max_minutes=0.5)).training.budget_seconds() == 30.0
    # the per-job guard counts "auto" as the most epochs it can choose on the dataset
    n = visits // 20
    check_job_size(parse_spec(tiny_spec(epochs="auto")), n, SimpleNamespace(JOB_MAX_SAMPLE_EPOCHS=20 * n))
    with pytest.raises(SpecError, match=rf'training.epochs: "auto" \(up to 20 epochs here\) x {n} samples'):
        check_job_size(parse_spec(tiny_spec(epochs="auto")), n, SimpleNamespace(JOB_MAX_SAMPLE_EPOCHS=20 * n - 1))


def test_auto_epochs_run_in_training_and_are_reported(monkeypatch):
    monkeypatch.setattr(S, "AUTO_MAX_EPOCHS", 4)  # a short run
    result = T.train(parse_spec(tiny_spec(epochs="auto", early_stopping=False)), make_data(n=40), device="cpu")
    # 40 samples -> the cap; the history says the plan, the metrics how the run ended
    assert len(result.history) == 4 == result.history[-1]["epochs"]
    assert result.metrics["epochs"] == 4 and result.metrics["stopped"] is None
    assert result.metrics["best_epoch"] == result.best_epoch


# ---------------------------------------------------------------- warm-up
def test_warmup_schedule_values_are_exact():
    assert warmup_steps(1.0, 8, 4) == 4 and warmup_steps(1.0, 2, 4) == 2 and warmup_steps(0.0, 8, 4) == 0
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.1}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01}])
    tc = parse_spec(tiny_spec(epochs=8, warmup_epochs=1.0)).training
    sched = Schedule(opt, tc, epochs=8, steps_per_epoch=4)
    # epoch 0: linear ramp (k + 1) / 4 on every group; afterwards the per-epoch cosine
    assert [sched.apply(0, k) for k in range(4)] == [0.1 * 0.25, 0.1 * 0.5, 0.1 * 0.75, 0.1 * 1.0]
    assert opt.param_groups[1]["lr"] == 0.01 * 1.0
    cos = [0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * e / 8, dtype=torch.float64)).item()) for e in range(8)]
    for e in range(1, 8):
        assert sched.apply(e, 0) == pytest.approx(0.1 * cos[e], rel=1e-12) and sched.apply(e, 3) == sched.apply(e, 0)
    none = Schedule(opt, parse_spec(tiny_spec(schedule="none", warmup_epochs=0.5)).training, 8, 4)
    assert [none.factor(0, k) for k in range(3)] == [0.5, 1.0, 1.0]


def test_training_uses_the_warmup_and_reports_each_epochs_last_rate():
    spec = parse_spec(tiny_spec(epochs=4, learning_rate=0.01, warmup_epochs=2.0, early_stopping=False))
    # 36 train samples, batch 16 -> 2 steps per epoch (16 + 20: on CPU a last batch under 8 joins the one before)
    result = T.train(spec, make_data(), device="cpu")
    sched = Schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01), spec.training, 4, 2)
    assert sched.warmup == 2  # 2 epochs asked, a quarter of the 4-epoch run allowed: 1 epoch = 2 steps
    assert [h["lr"] for h in result.history] == [sched.factor(e, 1) * 0.01 for e in range(4)]
    assert result.history[0]["lr"] == 0.01 and result.history[1]["lr"] < 0.01


# ---------------------------------------------------------------- time budget
def fake_clock(monkeypatch, step: float = 1.0):
    """The trainer's clock advances `step` s per call: an epoch's own time is then 2 * step s (3 calls) and a
    whole cycle, with what follows the epoch, 4 * step s (one more call: the budget check)."""
    ticks = itertools.count()
    monkeypatch.setattr(trainer, "clock", lambda: next(ticks) * step)


def test_time_budget_shrinks_auto_epochs_after_the_first(monkeypatch):
    fake_clock(monkeypatch)
    spec = parse_spec(tiny_spec(epochs="auto", max_minutes=0.2, early_stopping=False))  # 12 s; a cycle takes 4 s
    result = T.train(spec, make_data(n=40), device="cpu")
    assert [h["epochs"] for h in result.history] == [3, 3, 3]  # the cosine then ends on time
    assert result.history[-1]["lr"] < 0.3 * spec.training.learning_rate and result.metrics["stopped"] is None


def test_time_budget_stops_explicit_epochs_in_time(monkeypatch):
    fake_clock(monkeypatch)
    spec = parse_spec(tiny_spec(epochs=10, max_minutes=0.2, early_stopping=False))  # 12 s; a cycle takes 4 s
    result = T.train(spec, make_data(), device="cpu")
    assert len(result.history) == 3  # 3 cycles of 4 s fit in 12 s
    assert result.metrics["stopped"] == "time_budget" and result.history[-1]["epochs"] == 10


def test_time_budget_stops_a_real_run_in_time(tmp_path):
    """The budget is wall time: with a checkpoint after every (short) epoch, that costs about as much as the epoch
    itself, and counting only the epochs' own seconds overran a 15 s budget by 10 s in a real job."""
    spec = parse_spec(tiny_spec(epochs=10000, max_minutes=0.05, early_stopping=False))  # 3 s
    ends = []
    start = time.perf_counter()
    result = T.train(spec, make_data(), device="cpu", checkpoint_dir=tmp_path,
                     on_epoch=lambda item: ends.append(time.perf_counter()))
    first_epoch_start = ends[0] - result.history[0]["seconds"]
    cycles = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    assert result.metrics["stopped"] == "time_budget" and len(ends) > 3
    assert ends[-1] - first_epoch_start <= 3.0 + max(cycles), (ends[-1] - first_epoch_start, max(cycles))
    assert time.perf_counter() - start < 3.0 + 15.0  # setup and the first call's imports are outside the budget


# ---------------------------------------------------------------- early stopping, best weights, resume
def stopping_spec():
    return parse_spec(tiny_spec(epochs=30, learning_rate=0.05, schedule="none", warmup_epochs=0,
                                early_stopping={"metric": "val_loss", "patience": 2}))


def stop_after(epochs: int):
    """(on_epoch, should_stop): cancel training once `epochs` epochs have completed."""
    done = []
    return done.append, lambda: len(done) >= epochs


def test_early_stopping_keeps_the_best_epochs_exact_weights(tmp_path):
    result = T.train(stopping_spec(), make_data(), device="cpu")
    assert result.metrics["stopped"] == "early_stopping" and len(result.history) == result.best_epoch + 2
    on_epoch, should_stop = stop_after(result.best_epoch)
    with pytest.raises(T.TrainingCancelled):
        T.train(stopping_spec(), make_data(), device="cpu", checkpoint_dir=tmp_path, on_epoch=on_epoch,
                should_stop=should_stop)
    at_best = torch.load(tmp_path / T.CHECKPOINT, weights_only=True)
    assert at_best["epoch"] == result.best_epoch
    assert_same_state(at_best["model"], result.state_dict)  # the artifact's weights are that epoch's state


def test_resume_inside_the_patience_window_is_bit_identical(tmp_path):
    full = T.train(stopping_spec(), make_data(), device="cpu")
    on_epoch, should_stop = stop_after(full.best_epoch + 1)  # one epoch without improvement so far
    with pytest.raises(T.TrainingCancelled):
        T.train(stopping_spec(), make_data(), device="cpu", checkpoint_dir=tmp_path, on_epoch=on_epoch,
                should_stop=should_stop)
    resumed = T.train(stopping_spec(), make_data(), device="cpu", checkpoint_dir=tmp_path)
    assert_same_state(full.state_dict, resumed.state_dict)
    assert strip_timing(full.history) == strip_timing(resumed.history)
    assert (full.best_epoch, full.metrics["stopped"]) == (resumed.best_epoch, resumed.metrics["stopped"])
