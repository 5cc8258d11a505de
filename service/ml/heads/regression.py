"""regression: one number per sample. Trained standardised (`standardize`, default true) unless the loss has a
log link (poisson: the head outputs the log-rate, the prediction is exp(output))."""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from service.ml import scores as S
from service.ml.heads import register_head
from service.ml.heads.base import HeadType, show

FLOAT32_MAX = float(np.finfo(np.float32).max)
IDENTITY = {"mean": 0.0, "std": 1.0}


def _link(task) -> str:
    from service.ml.losses import loss_link

    return loss_link(task)


@register_head
class Regression(HeadType):
    name = "regression"
    default_loss = "mse"
    can_gate = False
    uncertainty_scale = 0.5
    metrics = ("rmse", "mae")
    gated_metrics = ("e2e_rmse", "e2e_mae")
    label_kind = "number"

    def encode(self, task, values, table, strict=True):
        from service.ml.data import Labels
        from service.ml.data.archive import DataError
        from service.ml.data.table import as_number

        out = np.zeros(len(values), dtype=np.float32)
        mask = np.zeros(len(values), dtype=bool)
        for j, v in enumerate(values):
            if v is None:
                continue
            x = as_number(v)
            problem = ("is not a number" if x is None else
                       "is not a finite number" if not math.isfinite(x) or abs(x) > FLOAT32_MAX else None)
            if problem is not None:
                if strict:
                    raise DataError(f"{table.where(j, task.source)}: {show(v)} {problem}")
                continue
            out[j], mask[j] = x, True
        return Labels(out, mask)

    def audit(self, task, values, table, label_errors):
        from service.ml.data.table import as_number

        numbers, invalid = [], 0
        for j, v in enumerate(values):
            if v is None:
                continue
            x = as_number(v)
            if x is None or not math.isfinite(x):
                invalid += 1
                if len(label_errors) < 20:
                    label_errors.append(f"{table.where(j, task.source)}: {show(v)} is not a finite number")
            else:
                numbers.append(x)
        arr = np.asarray(numbers, dtype=np.float64)
        stats = (arr.mean(), arr.std(), arr.min(), arr.max()) if arr.size else (None,) * 4
        info = {k: None if s is None else float(s) for k, s in zip(("mean", "std", "min", "max"), stats,
                                                                    strict=True)}
        return {**info, "invalid": invalid}

    def normalization(self, task, values):
        if task.standardize and _link(task) == "identity" and len(values):
            v = np.asarray(values, dtype=np.float64)
            return {"mean": float(v.mean()), "std": max(float(v.std()), 1e-6)}
        return dict(IDENTITY)

    def train_target(self, task, values, norm):
        norm = norm or IDENTITY
        return ((values.astype(np.float32) - norm["mean"]) / norm["std"]).astype(np.float32)

    def safe_target(self, target: Tensor, mask: Tensor, output: Tensor) -> Tensor:
        return target.float().where(mask, output.detach().float())

    def predictions(self, task, out, norm):
        out = np.asarray(out, dtype=np.float64)
        if _link(task) == "log":
            return np.exp(out)
        norm = norm or IDENTITY
        return out * norm["std"] + norm["mean"]

    def decode(self, task, preds, out):
        return [{"value": float(v)} for v in preds]

    def raw(self, entry):
        return entry["value"]

    def gated_output(self) -> dict:
        return {"value": None}

    def scores(self, task, y, p):
        return {"rmse": S.rmse(y, p), "mae": S.mae(y, p)}

    def e2e_scores(self, task, y, p, hit):
        return {"e2e_rmse": S.rmse(y[hit], p[hit]), "e2e_mae": S.mae(y[hit], p[hit])}

