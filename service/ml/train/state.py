"""Training state: the result, the cancellation signal, the best-epoch record and the self-describing,
atomically written checkpoint (network, optimiser, schedule, weighting strategy incl. its extra state, history,
split) that makes a resumed run bit-identical to an uninterrupted one on CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 3  # 3: per-step schedule (warm-up; epochs "auto" resolved), stop reason; 2: engine v2


class TrainingCancelled(Exception):
    """train() stopped because should_stop() returned True; the checkpoint of the last complete epoch is kept."""


@dataclass
class TrainResult:
    spec: object
    state_dict: dict[str, Tensor]  # the best epoch's network weights (CPU)
    history: list[dict]
    metrics: dict  # {"val_loss": float | None, "tasks": {task: {metric: value}}} of the best epoch
    best_epoch: int  # 1-based
    normalization: dict[str, dict]  # regression task -> {"mean", "std"} (identity when standardize is off)
    weighting: dict[str, float]  # effective task weights at the best epoch
    pretrained: dict | None = None  # the weights-store entry the backbone started from (name, arch, sha256, ...)
    warm_start: dict | None = None  # training.init_from: what was copied (service.ml.warm_start.apply)
    stopped: str | None = None  # why training ended before its planned epochs: "early_stopping" | "time_budget"


def cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: Path, run, epoch: int, history: list, best: dict, done: bool, stopped: str | None
                    ) -> None:
    atomic_save({
        "version": CHECKPOINT_VERSION,
        "spec": run.spec.model_dump_json(),
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "schedule": run.schedule.state_dict(),
        "weighting": run.weighting.state_dict(),
        "history": history,
        "best": best,
        "done": done,
        "stopped": stopped,
        "train_idx": torch.from_numpy(run.train_idx),
        "val_idx": torch.from_numpy(run.val_idx),
        "normalization": run.norm,
    }, path)


def checkpoint_history(checkpoint_dir: Path | str) -> list[dict]:
    """The epochs the checkpoint in checkpoint_dir already holds ([] without a readable one): a resumed job
    reports them before training on (the job row's history may lag it: progress writes are rate-limited)."""
    path = Path(checkpoint_dir) / CHECKPOINT
    if not path.exists():
        return []
    try:
        return list(torch.load(path, map_location="cpu", weights_only=True).get("history") or [])
    except Exception:  # noqa: BLE001 - unreadable: the trainer itself reports it when it loads the file
        return []


def load_checkpoint(path: Path, run) -> tuple[list, dict, bool, int, str | None]:
    """Restore `run` from the checkpoint at path -> (history, best, done, epoch, stopped). ValueError when it
    belongs to another spec, format or data. `best` holds the best epoch's weights and score: with the epoch count
    it is all of early stopping's state (patience = epochs since the best one)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if ck.get("version") != CHECKPOINT_VERSION or ck["spec"] != run.spec.model_dump_json():
        raise ValueError(f"{path}: checkpoint belongs to a different spec or format; remove it to restart")
    if not (np.array_equal(ck["train_idx"].numpy(), run.train_idx)
            and np.array_equal(ck["val_idx"].numpy(), run.val_idx)):
        raise ValueError(f"{path}: checkpoint was written for different data; remove it to restart")
    run.model.load_state_dict(ck["model"])
    run.weighting.load_state_dict(ck["weighting"])
    run.opt.load_state_dict(ck["optimizer"])
    run.schedule.load_state_dict(ck["schedule"])
    return ck["history"], ck["best"], ck["done"], ck["epoch"], ck["stopped"]


def score(item: dict, metric: str) -> float | None:
    if metric == "val_loss":
        return item["val_loss"]
    task, key = metric.split(".", 1)
    return item["val"].get(task, {}).get(key)
