"""run_comparison(): every sub-run of a compare block (service/ml/compare.py) trained one after the other on the
main spec's split, with the report (service/ml/compare_report.py) rebuilt after each. The worker
(worker/compare.py) binds it to the job row (save = a fenced write, should_stop = cancel/lease/timeout, the epoch
callbacks = the job's one progress bar); bench/compare_example.py calls it directly.

Resume: `state` holds the finished sub-runs (as saved); they are skipped. The sub-run that was running resumes from
its checkpoint under checkpoint_root/run-NN when that is there, and restarts otherwise. The result to register
(main, or the best weighting with register "best", at the spec's own seed) is the one trained in this call, else
re-loaded from its finished checkpoint (re-trained, deterministically on CPU, when that is gone).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.ml import compare as C
from service.ml.baselines import trivial_baselines
from service.ml.compare_report import best_variant, build_report, head_metric
from service.ml.train import TrainingCancelled, stratified_split, train


def run_comparison(spec, block: dict[str, Any], data, *, device: str = "auto", checkpoint_root: Path | None = None,
                   state: dict[str, Any] | None = None, save: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, on_epoch: Callable[[dict], None] | None = None,
                   on_step: Callable[[dict], None] | None = None, weights_dir=None, init=None
                   ) -> tuple[Any, dict[str, Any]]:
    """-> (the TrainResult to register, the final state {"runs", "baselines", "report", "registered"}).
    on_epoch/on_step get the sub-run's items with the epoch counted over all sub-runs (sub-run i starts at
    i x epochs) and its key as "run"; init: the warm start every sub-run begins from (training.init_from: the
    trunk and the heads of the same name). Raises TrainingCancelled when should_stop() turns true."""
    runs, plan = C.plan(spec, block), C.plan_summary(spec, block)
    state = dict(state or {})
    done: dict[str, dict] = dict(state.get("runs") or {})
    split = stratified_split(spec, data)
    rows = C.scored_rows(spec, data, split[1])
    truth = {t: data.labels[t].values[r] for t, r in rows.items()}
    metric_of = {t.name: head_metric(t) for t in spec.tasks}
    baselines = state.get("baselines") or {
        h: {"kind": b["kind"], "value": b["baseline"]} for h, b in trivial_baselines(
            spec, {t: data.labels[t].values for t in spec.task_names},
            {t: data.labels[t].mask for t in spec.task_names}, *split).items()}
    epochs, kept = spec.training.planned_epochs(len(data.images)), {}  # each sub-run's most epochs ("auto" too)

    def folder(i: int) -> Path | None:
        return checkpoint_root / f"run-{i:02d}" if checkpoint_root is not None else None

    for i, sub in enumerate(runs):
        if sub.key in done:
            continue
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"stopped before comparison sub-run {sub.key}")
        result = train(sub.spec, C.sub_data(spec, data, sub), device=device, split=split,
                       on_epoch=_shifted(on_epoch, i * epochs, sub.key), on_step=_shifted(on_step, i * epochs, sub.key),
                       should_stop=should_stop, checkpoint_dir=folder(i), weights_dir=weights_dir, init=init)
        if sub.head is None and sub.seed == spec.training.seed:
            kept[sub.variant] = result
        done[sub.key] = record(sub, result, data, rows, len(split[0]), metric_of)
        state = {"runs": done, "baselines": baselines,
                 "report": build_report(spec, plan, done, truth, baselines)}
        if save is not None:
            save(state)
    report = build_report(spec, plan, done, truth, baselines)
    variant = best_variant(report) if block.get("register") == "best" else C.MAIN
    index = next(i for i, r in enumerate(runs) if r.variant == variant)  # its first seed: the spec's own
    result = kept.get(variant) or train(runs[index].spec, data, device=device, split=split, should_stop=should_stop,
                                        checkpoint_dir=folder(index), weights_dir=weights_dir, init=init)
    state = {"runs": done, "baselines": baselines, "report": report,
             "registered": {"variant": variant, "seed": runs[index].seed}}
    return result, state


def _shifted(callback, offset: int, key: str):
    """A sub-run's epoch numbers -> the comparison's (one progress bar over all sub-runs)."""
    if callback is None:
        return None

    def call(item: dict[str, Any]) -> None:
        # "epochs" (a sub-run's own plan) is left out: the monitor's epochs span every sub-run
        callback({**{k: v for k, v in item.items() if k != "epochs"}, "epoch": offset + int(item.get("epoch", 1)),
                  "run": key})
    return call


def record(sub, result, data, rows, train_rows: int, metric_of: dict[str, str]) -> dict[str, Any]:
    """What is kept of a finished sub-run: its heads' primary metric and labelled count, its validation
    predictions (for the bootstrap) and its compute (seconds of its epochs, epochs, images processed)."""
    heads = [sub.head] if sub.head else sub.spec.task_names
    metrics = {}
    for h in heads:
        val = result.metrics["tasks"].get(h, {})
        name = metric_of[h]
        metrics[h] = {"metric": name, "value": val.get(name), "labelled": int(val.get("labelled") or 0)}
    return {"key": sub.key, "variant": sub.variant, "seed": sub.seed, "head": sub.head, "metrics": metrics,
            "preds": C.validation_predictions(result, data.images, {h: rows[h] for h in heads}),
            "best_epoch": result.best_epoch, "epochs": len(result.history),
            "seconds": round(sum(float(h.get("seconds") or 0.0) for h in result.history), 3),
            "samples": len(result.history) * train_rows}
