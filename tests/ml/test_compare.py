"""The comparison's pieces without a worker: the verdict rule on hand-made numbers, the report on hand-made
predictions, the sub-run plan (single-task specs of gated heads, weighting variants, seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from service.ml import compare as C
from service.ml import compare_report as R
from service.ml.spec import SpecError, parse_spec


def spec(strategy: str = "fixed"):
    return parse_spec({
        "tasks": [{"name": "kind", "type": "multiclass", "classes": ["a", "b"]},
                  {"name": "size", "type": "regression", "gate": {"task": "kind", "classes": ["a"]}}],
        "weighting": {"strategy": strategy},
        "training": {"seed": 3, "epochs": 2, "early_stopping": {"metric": "kind.accuracy", "patience": 2}}})


@pytest.mark.parametrize(("d", "noise", "tol", "expected"), [
    (0.05, 0.01, 0.005, "multi-task better"),  # 0.05 > 2 x 0.01
    (-0.05, 0.01, 0.005, "multi-task worse"),
    (0.015, 0.01, 0.005, "within noise"),  # inside 2 x noise
    (0.004, 0.0, 0.005, "within noise"),  # no noise at all, but below the smallest difference worth a verdict
    (0.006, 0.0, 0.005, "multi-task better"),
])
def test_verdict_rule(d, noise, tol, expected) -> None:
    assert R.verdict(d, noise, tol) == expected


def test_spread_and_tolerance() -> None:
    assert R.spread([0.8, 0.9, None]) == pytest.approx({"mean": 0.85, "std": 0.0707107, "min": 0.8, "max": 0.9})
    assert R.spread([0.7])["std"] is None and R.spread([])["mean"] is None
    assert R.tolerance("accuracy", 0.9) == 0.005 and R.tolerance("mae", 2.0) == pytest.approx(0.02)


def test_paired_noise_is_zero_for_identical_predictions_and_grows_with_seed_spread() -> None:
    y = np.arange(40) % 2
    p = [y.copy()]
    acc = lambda yy, pp: float(np.mean(yy == pp))  # noqa: E731
    assert R.paired_noise(acc, y, p, p) == 0.0
    wrong = y.copy()
    wrong[:10] = 1 - wrong[:10]  # 0.75 accuracy
    assert R.paired_noise(acc, y, [y, wrong], [y, y]) > R.paired_noise(acc, y, [wrong], [y]) > 0


def record(variant, seed, head, value, preds, labelled=None):
    return {"key": f"{variant}:{head}/s{seed}", "variant": variant, "seed": seed,
            "metrics": {head: {"metric": "x", "value": value, "labelled": labelled or len(preds)}},
            "preds": {head: preds}, "seconds": 1.0, "epochs": 2, "samples": 10}


def test_report_verdicts_best_weighting_and_baseline_on_hand_made_predictions() -> None:
    s = spec()
    plan = C.plan_summary(s, {"single_task": True, "weighting": ["uncertainty"], "seeds": 1})
    y = {"kind": np.array([0, 1] * 50), "size": np.linspace(0.0, 10.0, 30)}
    good, bad = y["kind"].tolist(), [0] * 100  # 1.0 vs 0.5 accuracy
    runs = {}
    for variant, kind, size in (("main", good, y["size"] + 0.1), ("weighting:uncertainty", good, y["size"] + 0.1),
                                ("single_task", bad, y["size"] + 0.1)):
        for head, preds in (("kind", kind), ("size", list(size))):
            r = record(variant, 3, head, None, preds)
            r["metrics"][head]["value"] = s.task(head).head.scores(s.task(head), y[head], np.asarray(preds))[
                R.head_metric(s.task(head))]
            runs[r["key"]] = r
    report = R.build_report(s, plan, runs, y, {"kind": {"kind": "majority", "value": 0.5},
                                               "size": {"kind": "mean", "value": 2.5}})
    kind, size = report["heads"]
    assert kind["metric"] == "accuracy" and kind["verdict"]["single_task"] == "multi-task better"
    assert kind["verdict"]["difference"] == pytest.approx(0.5) and kind["verdict"]["method"] == "bootstrap"
    assert size["metric"] == "rmse" and size["verdict"]["single_task"] == "within noise"  # identical predictions
    assert size["verdict"]["noise"] == 0.0 and size["beats_baseline"] is True and kind["beats_baseline"] is True
    # main and uncertainty tie on every head: main wins the tie, and fixed (= main) is within noise of it
    assert report["best_weighting"]["variant"] == "main" and report["best_weighting"]["fixed_within_noise"] is True
    assert R.best_variant(report) == "main"
    assert [v["runs_done"] for v in report["variants"]] == [2, 2, 2]
    assert report["variants"][2]["compute"] == {"seconds": 2.0, "epochs": 4, "samples": 20}


def test_a_learned_weighting_beyond_noise_is_reported_as_beating_fixed() -> None:
    s = spec()
    plan = C.plan_summary(s, {"weighting": ["uncertainty"], "seeds": 1})
    y = {"kind": np.array([0, 1] * 100), "size": np.zeros(0)}
    runs = {}
    for variant, acc_preds in (("main", [0] * 200), ("weighting:uncertainty", y["kind"].tolist())):
        r = record(variant, 3, "kind", float(np.mean(np.asarray(acc_preds) == y["kind"])), acc_preds)
        runs[r["key"]] = r
    report = R.build_report(s, plan, runs, y, {})
    kind = report["heads"][0]
    assert kind["best_weighting"] == {"variant": "weighting:uncertainty", "strategy": "uncertainty", "mean": 1.0,
                                      "fixed_within_noise": False}
    assert kind["verdict"]["single_task"] is None  # no single-task variant asked for
    assert R.best_variant(report) == "main"  # "size" has no results: no complete ranking -> main


def test_plan_and_variant_specs() -> None:
    s = spec("uncertainty")
    block = C.check_compare({"single_task": True, "weighting": ["fixed", "uncertainty"], "seeds": 2}, s)
    runs = C.plan(s, block)
    assert [r.key for r in runs] == ["main/s0", "main/s1", "weighting:fixed/s0", "weighting:fixed/s1",
                                     "single_task:kind/s0", "single_task:size/s0", "single_task:kind/s1",
                                     "single_task:size/s1"]
    assert [r.seed for r in runs[:2]] == [3, 4] and runs[2].spec.weighting.strategy == "fixed"
    single = runs[5].spec  # the gated head alone: no gate, weight 1, plain loss, early stopping on val_loss
    assert single.task_names == ["size"] and single.tasks[0].gate is None
    assert single.training.early_stopping.metric == "val_loss" and single.weighting.strategy == "fixed"
    assert runs[4].spec.training.early_stopping.metric == "kind.accuracy"
    with pytest.raises(SpecError, match="nothing to compare"):
        C.check_compare({"weighting": ["uncertainty"]}, s)


def test_single_task_data_keeps_the_gated_rows_only() -> None:
    from service.ml.data import Labels, TrainingData

    s = spec()
    data = TrainingData(images=np.zeros((4, 8, 8, 3), np.uint8), labels={
        "kind": Labels(np.array([0, 1, 0, 0]), np.array([True, True, False, True])),
        "size": Labels(np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([True, True, True, False]))})
    run = next(r for r in C.plan(s, {"single_task": True, "seeds": 1}) if r.head == "size")
    sub = C.sub_data(s, data, run)
    # row 1 is known negative (kind 'b' is not a gate class), row 2 has an unknown gate (kept, as in training)
    assert list(sub.labels) == ["size"] and sub.labels["size"].mask.tolist() == [True, False, True, False]


def test_a_stopped_comparison_resumes_finished_sub_runs_kept_and_the_running_one_from_its_checkpoint(tmp_path) -> None:
    from service.ml.compare_run import run_comparison
    from service.ml.data import load_training_data
    from service.ml.examples import example_spec, make_example_dataset
    from service.ml.train import TrainingCancelled

    raw = example_spec(image_size=16, weighting="fixed", epochs=2)
    raw["model"].update(width=4, depth=1, head_hidden=8)
    raw["training"].update(batch_size=16, device="cpu")
    s, data = load_training_data(parse_spec(raw), make_example_dataset(tmp_path / "x.zip", n=32, image_size=16),
                                 tmp_path / "cache")
    block = C.check_compare({"weighting": ["uncertainty"]}, s)
    saved, seen, stop = [], [], []

    def on_epoch(item):
        seen.append((item["run"], item["epoch"]))
        if item["epoch"] == 3:  # the second sub-run's first epoch (epochs count over sub-runs)
            stop.append(True)

    kwargs = dict(device="cpu", checkpoint_root=tmp_path / "runs", on_epoch=on_epoch)
    with pytest.raises(TrainingCancelled):
        run_comparison(s, block, data, save=saved.append, should_stop=lambda: bool(stop), **kwargs)
    assert seen == [("main/s0", 1), ("main/s0", 2), ("weighting:uncertainty/s0", 3)] and len(saved) == 1
    seen.clear()
    result, state = run_comparison(s, block, data, state=saved[-1], save=saved.append, **kwargs)
    assert seen == [("weighting:uncertainty/s0", 4)]  # main kept, the running sub-run resumed after its epoch 1
    assert state["runs"]["main/s0"] == saved[0]["runs"]["main/s0"] and state["registered"]["variant"] == "main"
    assert result.metrics["tasks"]["category"]["accuracy"] == state["runs"]["main/s0"]["metrics"]["category"]["value"]


def test_jobs_compare_command_prints_the_tables_or_json(capsys) -> None:
    import argparse
    import json
    from contextlib import nullcontext

    from service.api.schemas import ComparisonRead
    from service.client import compare_cli

    report = ComparisonRead.model_validate({
        "job_id": "j1", "status": "running", "complete": False, "runs_done": 1, "runs_total": 2,
        "compare": {"weighting": ["dwa"]}, "seeds": [0],
        "variants": [{"name": "main", "strategy": "fixed", "runs": 1, "runs_done": 1,
                      "compute": {"seconds": 1.5, "epochs": 2, "samples": 80}},
                     {"name": "weighting:dwa", "strategy": "dwa", "runs": 1}],
        "heads": [{"head": "kind", "metric": "accuracy", "higher_is_better": True, "labelled": 9,
                   "baseline": {"kind": "majority", "value": 0.5}, "beats_baseline": False,
                   "results": [{"variant": "main", "mean": 0.5, "std": None, "min": 0.5, "max": 0.5, "values": [0.5],
                                "labelled": 9}],
                   "verdict": {"single_task": None, "difference": None, "noise": None, "method": "bootstrap"},
                   "best_weighting": None}],
        "best_weighting": None, "registered": None, "verdict_rule": None, "register_rule": None, "plot": "/p.png"})

    class Fake:
        def job_comparison(self, job_id):
            assert job_id == "j1"
            return report

    for as_json in (False, True):
        args = argparse.Namespace(job_id="j1", json=as_json)
        assert compare_cli.cmd_jobs_compare(args, lambda a: nullcontext(Fake())) == 0
        out = capsys.readouterr().out
        if as_json:
            assert json.loads(out)["runs_total"] == 2
        else:
            assert "1/2 sub-runs (running, not complete)" in out and "baseline (majority)  0.5000" in out
            assert "kind  -                -           -      -               -                   NO" in out
            assert "weighting:dwa  0/1   -" in out
