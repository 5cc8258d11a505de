"""train(): the epoch loop around a Run: deterministic CPU kernels, per-epoch checkpoints and resume, the epoch
plan (explicit, or "auto" from the dataset size and the time budget), early stopping on a validation metric, the
best epoch's weights as the result.

Determinism: every epoch starts from `torch.manual_seed(epoch_seed(seed, epoch))` (dropout) and draws its shuffle
and augmentation from generators seeded the same way, so an epoch depends only on the state saved at the end of
the previous one: a run resumed from a checkpoint is bit-identical (on CPU) to an uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from time import perf_counter as clock  # the epoch timer (tests replace it)

import torch

from service.ml import metrics as M
from service.ml.baselines import head_baselines
from service.ml.distributed import World
from service.ml.spec import Spec, SpecError
from service.ml.train import parallel
from service.ml.train.loop import Run
from service.ml.train.split import stratified_split
from service.ml.train.state import CHECKPOINT, TrainResult, cpu_state, load_checkpoint, save_checkpoint, score


def resolve_device(device: str, spec: Spec) -> torch.device:
    name = spec.training.device if device == "auto" else device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was requested but no CUDA device is available")
    return torch.device(name)


def _check_metric(spec: Spec) -> str:
    es = spec.training.early_stopping
    select = es.metric if es is not None else "val_loss"
    if select != "val_loss":
        task, key = select.split(".", 1)
        if key not in M.metric_names(spec, task):
            raise SpecError([f"training.early_stopping.metric: '{key}' is not a metric of '{task}'; allowed: "
                             f"{', '.join(M.metric_names(spec, task))}"])
    return select


def train(spec: Spec, data, *, device: str = "auto", on_epoch: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, checkpoint_dir: Path | str | None = None,
          on_step: Callable[[dict], None] | None = None, weights_dir: Path | str | None = None,
          init: tuple | None = None, world: World | None = None, split: tuple | None = None) -> TrainResult:
    """Train a MultiTaskCNN on `data` (see module doc). Raises TrainingCancelled when should_stop() turns true.
    weights_dir: the pretrained-weights store (HEADWISE_WEIGHTS_DIR) that `model.pretrained` names an entry of.
    init: warm start (training.init_from) as (parent spec, parent state dict, source dict): service.ml.warm_start.
    world: this process's rank when torchrun started several (service/ml/train/rank_main.py); one otherwise.
    split: (train indices, val indices) to use instead of the spec's own seeded split (comparison sub-runs keep
    the main spec's split whatever their seed or heads)."""
    dev = resolve_device(device, spec)
    select = _check_metric(spec)
    # Deterministic kernels on CPU (process-global: restored afterwards). Filling uninitialised memory with NaN
    # (a debugging aid that is part of deterministic mode) only costs time, so it is switched off meanwhile.
    det = torch.utils.deterministic
    restore = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
               det.fill_uninitialized_memory)
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = False
    try:
        result = _train(spec, data, dev, select, on_epoch, should_stop, checkpoint_dir, on_step,
                        Path(weights_dir) if weights_dir is not None else None, init, world or World(), split)
    finally:
        torch.use_deterministic_algorithms(restore[0], warn_only=restore[1])
        det.fill_uninitialized_memory = restore[2]
    # each head's primary metric beside its trivial baseline (service/ml/baselines.py), on the run's split
    result.metrics["baselines"] = head_baselines(
        spec, {t: data.labels[t].values for t in spec.task_names}, {t: data.labels[t].mask for t in spec.task_names},
        *(split if split is not None else stratified_split(spec, data)), result.metrics.get("tasks") or {})
    return result


def _epoch(run: Run, epoch: int, should_stop, on_step) -> dict:
    t0 = clock()
    train_stats, lr = run.train_epoch(epoch, should_stop, on_step)
    train_seconds = clock() - t0
    weights = run.weighting.weights()
    run.weighting.end_epoch({t: v["loss"] for t, v in train_stats.items() if v["loss"] is not None})
    val, val_loss = run.validate()
    return {"epoch": epoch + 1, "epochs": run.schedule.epochs, "lr": lr, "seconds": clock() - t0,
            "images_per_second": len(run.train_idx) / max(train_seconds, 1e-9), "weights": weights,
            "train": train_stats, "val": val, "val_loss": val_loss}


def _plan(run: Run, history: list[dict], budget: float | None, spent: float, cycle: float) -> str | None:
    """After an epoch: fit the run into the time budget -> "time_budget" when the next epoch would not fit.

    spent: wall seconds of training so far; cycle: the last epoch's wall seconds, what follows it included
    (checkpoint, progress report), which on a small dataset can cost as much as the epoch itself.
    epochs "auto": after the first epoch the plan shrinks to the epochs that fit (the cosine schedule then ends
    on time); any spec: the next epoch starts only if the time spent plus the last cycle's time fits."""
    if budget is None:
        return None
    if len(history) == 1 and run.spec.training.epochs == "auto":
        run.schedule.epochs = max(1, min(run.schedule.epochs, int(budget // max(cycle, 1e-9))))
        history[-1]["epochs"] = run.schedule.epochs
    return "time_budget" if len(history) < run.schedule.epochs and spent + cycle > budget else None


def _train(spec, data, dev, select, on_epoch, should_stop, checkpoint_dir, on_step, weights_dir, init, world,
           split=None) -> TrainResult:
    run = Run(spec, data, dev, weights_dir, init, world, split)
    higher = M.higher_is_better(select)
    history: list[dict] = []
    best: dict = {"epoch": 0, "score": None, "state": None, "weights": None}
    done, start, stopped = False, 0, None
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        history, best, done, start, stopped = load_checkpoint(ckpt_path, run)
    elif ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    patience = spec.training.early_stopping.patience if spec.training.early_stopping else None
    budget = spec.training.budget_seconds()
    epoch = start
    before = sum(h["seconds"] for h in history)  # a resumed run's earlier attempts (their epochs' own time)
    t_run = t_last = clock()
    while epoch < run.schedule.epochs and not done:
        item = _epoch(run, epoch, should_stop, on_step)
        history.append(item)
        now = clock()
        stopped = _plan(run, history, budget, before + now - t_run, now - t_last)
        t_last = now
        s = score(item, select)
        if s is not None and math.isfinite(s) and (best["score"] is None or (s > best["score"] if higher
                                                                              else s < best["score"])):
            best = {"epoch": epoch + 1, "score": s, "state": cpu_state(run.model), "weights": item["weights"]}
        if patience is not None and best["epoch"] and epoch + 1 - best["epoch"] >= patience:
            stopped = stopped or "early_stopping"
        done = stopped is not None
        if world.distributed:  # rank 0 validated and timed: its decisions hold for every rank
            done = parallel.agree(done, dev)
            run.schedule.epochs = parallel.agree_int(run.schedule.epochs, dev)
        epoch += 1
        if ckpt_path is not None and world.is_main:
            save_checkpoint(ckpt_path, run, epoch, history, best, done, stopped)
        if on_epoch is not None:
            on_epoch(item)
    if best["state"] is None:  # no usable validation score: keep the last epoch
        best = {"epoch": len(history), "score": None, "state": cpu_state(run.model),
                "weights": history[-1]["weights"] if history else run.weighting.weights()}
    chosen = history[best["epoch"] - 1] if history else {"val": {}, "val_loss": None}
    metrics = {"val_loss": chosen["val_loss"], "tasks": chosen["val"], "best_epoch": best["epoch"],
               "epochs": len(history), "stopped": stopped,
               "precision": run.precision.describe()}  # what this machine trained in (service/ml/precision.py)
    return TrainResult(spec=spec, state_dict=best["state"], history=history, metrics=metrics,
                       best_epoch=best["epoch"], normalization=run.norm, weighting=best["weights"],
                       pretrained=run.pretrained, warm_start=run.warm_start,
                       stopped=stopped)
