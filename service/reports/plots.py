"""PNG plots from stored training history and validation predictions (matplotlib, Agg backend, no GUI).

curves_png(history, weighting)      train/val loss and the main metric per head over epochs (+ learned weights)
confusion_png(...) / scatter_png(...) per-head evaluation plots of a model version, end to end for gated heads:
    a gated head's suppressed outputs count as the "(gated)" class / are drawn as gate mistakes.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from service.domain import main_metric  # noqa: E402

GATED = "(gated)"
LEARNED_STRATEGIES = ("uncertainty", "dwa")


def _png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _message_png(text: str, size: tuple[float, float] = (6, 3)) -> bytes:
    fig = plt.figure(figsize=size)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#444")
    return _png(fig)


def _series(history: Sequence[dict], split: str, task: str, key: str) -> list[float]:
    out = []
    for item in history:
        value = (item.get(split) or {}).get(task, {}).get(key)
        out.append(float(value) if isinstance(value, int | float) and value is not None else math.nan)
    return out


def _tasks(history: Sequence[dict]) -> list[str]:
    names: list[str] = []
    for item in history:
        for split in ("train", "val"):
            for task in item.get(split) or {}:
                if task not in names:
                    names.append(task)
    return names


def curves_png(history: Sequence[dict], weighting: str | dict | None = None, title: str = "") -> bytes:
    """One panel per head (train/val loss, main val metric on a second axis), a total validation loss
    panel, and a task-weight panel when the weighting strategy is learned (uncertainty, dwa)."""
    strategy = weighting.get("strategy") if isinstance(weighting, dict) else weighting
    if not history:
        return _message_png(f"{title}\nno epochs finished yet".strip())
    epochs = [int(item.get("epoch", i + 1)) for i, item in enumerate(history)]
    tasks = _tasks(history)
    learned = strategy in LEARNED_STRATEGIES and any(item.get("weights") for item in history)
    panels = 1 + len(tasks) + (1 if learned else 0)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)

    ax = flat[0]
    total = [float(i["val_loss"]) if isinstance(i.get("val_loss"), int | float) else math.nan for i in history]
    train_total = [sum(v for v in (_series([i], "train", t, "loss")[0] for t in tasks) if not math.isnan(v))
                   for i in history]
    ax.plot(epochs, train_total, "-o", ms=3, label="train (sum)")
    ax.plot(epochs, total, "--o", ms=3, label="val")
    ax.set_title("total loss")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    for ax, task in zip(flat[1:], tasks, strict=False):
        ax.plot(epochs, _series(history, "train", task, "loss"), "-o", ms=3, color="tab:blue", label="train loss")
        ax.plot(epochs, _series(history, "val", task, "loss"), "--o", ms=3, color="tab:orange", label="val loss")
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        last_val = next((i["val"][task] for i in reversed(history) if task in (i.get("val") or {})), {})
        metric = main_metric(last_val)
        handles, labels = ax.get_legend_handles_labels()
        if metric:
            ax2 = ax.twinx()
            ax2.plot(epochs, _series(history, "val", task, metric), "-s", ms=3, color="tab:green", label=metric)
            ax2.set_ylabel(f"val {metric}")
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=8, loc="best")

    if learned:
        ax = flat[1 + len(tasks)]
        for task in tasks:
            ws = [float((i.get("weights") or {}).get(task, math.nan)) for i in history]
            ax.plot(epochs, ws, "-o", ms=3, label=task)
        ax.set_title(f"task weights ({strategy})")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in flat[:panels]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in flat[panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def confusion_png(task: str, classes: Sequence[str], y_true: Sequence[str | None],
                  y_pred: Sequence[str | None], gated: bool = False, title: str = "",
                  pairs: Counter | None = None) -> bytes:
    """Confusion matrix (rows true, columns predicted). For a gated head the extra class "(gated)"
    means "gate negative" on the true side and "suppressed" on the predicted side; its off-diagonal
    cells are gate mistakes and are outlined in red. Samples with y_true None (unlabelled) are skipped.
    pairs: {(true, predicted): count} instead of the two sequences (then pass y_true = y_pred = [])."""
    labels = [str(c) for c in classes] + ([GATED] if gated else [])
    index = {c: i for i, c in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    counted = pairs.items() if pairs is not None else ((tp, 1) for tp in zip(y_true, y_pred, strict=True))
    for (t, p), count in counted:
        if t is None:
            continue
        t = GATED if t == GATED else str(t)
        p = GATED if p is None or p == GATED else str(p)
        if t in index and p in index:
            matrix[index[t], index[p]] += count
    n = int(matrix.sum())
    if n == 0:
        return _message_png(f"{task}: no labelled validation samples")
    size = max(4.0, 0.55 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    row_sums = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, np.maximum(row_sums, 1))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true row")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    mistakes = 0
    if gated:
        g = index[GATED]
        for i in range(len(labels)):
            for j in range(len(labels)):
                if i != j and (i == g or j == g) and matrix[i, j] > 0:
                    mistakes += int(matrix[i, j])
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    accuracy = float(np.trace(matrix)) / n
    sub = f"n={n}, accuracy={accuracy:.3f}" + (f", gate mistakes={mistakes} (red)" if gated else "")
    ax.set_title(f"{title or task}\n{sub}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def scatter_png(task: str, y_true: Sequence[float], y_pred: Sequence[float | None],
                y_raw: Sequence[float | None] | None = None, false_open: int = 0, title: str = "") -> bytes:
    """Predicted vs true for a regression head. A None prediction means the head was suppressed by its
    gate although a true value exists (a gate mistake): drawn at the raw, ungated value as a red x.
    `false_open` counts gate-negative samples that the model did not suppress (noted in the title)."""
    true = np.asarray(y_true, dtype=float)
    if true.size == 0:
        return _message_png(f"{task}: no labelled validation samples")
    pred = np.array([math.nan if p is None else float(p) for p in y_pred], dtype=float)
    raw = np.array([math.nan if r is None else float(r) for r in (y_raw if y_raw is not None else [None] * len(true))], dtype=float)
    ok = ~np.isnan(pred)
    mistake = ~ok
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.scatter(true[ok], pred[ok], s=14, alpha=0.7, color="tab:blue", label="predicted")
    mx = mistake & ~np.isnan(raw)
    if mistake.any():
        ax.scatter(true[mx], raw[mx], s=36, marker="x", color="red",
                   label=f"gate mistake: suppressed ({int(mistake.sum())}; raw value)")
    values = np.concatenate([true, pred[ok], raw[mx]])
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ":", color="gray", label="y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    mae = float(np.mean(np.abs(true[ok] - pred[ok]))) if ok.any() else math.nan
    sub = f"n={true.size}, MAE={mae:.3g} (unsuppressed)"
    if mistake.any() or false_open:
        sub += f"\nsuppressed but labelled={int(mistake.sum())}, gate-negative not suppressed={false_open}"
    ax.set_title(f"{title or task}\n{sub}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------ model-version plots from validation predictions
def known_negative(spec: Any, labels: dict[str, Any], name: str) -> np.ndarray:
    """Samples where task `name` does not apply (its gate chain is known negative from the labels): the engine's
    gate semantics (service.ml.gating), not a copy."""
    from service.ml import gating

    values = {t: np.asarray(lab.values) for t, lab in labels.items()}
    masks = {t: np.asarray(lab.mask, dtype=bool) for t, lab in labels.items()}
    return gating.known_negative(spec, values, masks)[name]


def _tag_set(tags: Any) -> str:
    return "|".join(tags) if len(tags) else "(no tag)"


def _class_name(task: Any, value: Any) -> str:
    if task.type == "multilabel":  # the tag set is the "class" of the confusion matrix
        return _tag_set([c for c, v in zip(task.classes, value, strict=True) if v >= 0.5])
    if task.type == "binary":
        return "true" if float(value) >= 0.5 else "false"
    return str(task.classes[int(value)])


def _pred_name(task: Any, out: dict) -> str | None:
    if out.get("gated"):
        return None
    if task.type == "multilabel":
        return None if out.get("labels") is None else _tag_set(out["labels"])
    label = out.get("label")
    if task.type == "binary":
        return "true" if label is True or str(label).lower() == "true" else "false"
    return None if label is None else str(label)


def task_png(spec: Any, labels: dict[str, Any], val_idx: np.ndarray, preds: Sequence[dict], name: str,
             title: str = "") -> bytes:
    """The evaluation plot of one head over the validation samples (`preds[k]` is the Predictor output, with
    raw=True, for sample `val_idx[k]`): a confusion matrix for classification heads, predicted-vs-true for
    regression heads; end to end (the predicted gate decides) for gated heads."""
    values = {t: np.asarray(lab.values)[val_idx] for t, lab in labels.items()}
    masks = {t: np.asarray(lab.mask, dtype=bool)[val_idx] for t, lab in labels.items()}
    plot = TaskPlot(spec, name, title)
    plot.add(values, masks, preds)
    return plot.png()


class TaskPlot:
    """task_png's inputs gathered a batch at a time (evaluation jobs stream the dataset): a classification head
    keeps only the count of each (true, predicted) pair, a regression head three float64 per scored sample (true,
    predicted or NaN when suppressed, raw); never the prediction dicts."""

    def __init__(self, spec: Any, name: str, title: str = ""):
        from service.ml import gating

        self.spec, self.name, self.task, self.gating = spec, name, spec.task(name), gating
        self.gated = self.task.gate is not None
        self.title = f"{title or name} (end to end: gated on {self.task.gate.task})" if self.gated else title
        self.pairs: Counter = Counter()
        self.points: list[np.ndarray] = []  # regression: (3, n) per batch
        self.false_open = 0

    def add(self, values: dict[str, np.ndarray], masks: dict[str, np.ndarray], preds: Sequence[dict]) -> None:
        """One batch: labels (values, masks per task) and the Predictor outputs (raw=True) of its samples."""
        task, name = self.task, self.name
        mask = np.asarray(masks[name], dtype=bool)
        negative = self.gating.known_negative(self.spec, values, masks)[name]
        outs = [p[name] for p in preds]
        if task.type == "regression":
            keep = mask & ~negative
            kept = [o for o, k in zip(outs, keep, strict=True) if k]
            self.points.append(np.array([
                np.asarray(values[name])[keep].astype(float),
                [math.nan if o.get("gated") or o.get("value") is None else float(o["value"]) for o in kept],
                [math.nan if o.get("raw", o.get("value")) is None else float(o.get("raw", o.get("value")))
                 for o in kept]], dtype=float).reshape(3, -1))
            self.false_open += sum(1 for o, neg in zip(outs, negative, strict=True) if neg and not o.get("gated"))
            return
        for present, neg, v, o in zip(mask, negative, np.asarray(values[name]), outs, strict=True):
            true = GATED if self.gated and neg else _class_name(task, v) if present else None
            self.pairs[(true, _pred_name(task, o))] += 1

    def png(self) -> bytes:
        task = self.task
        if task.type == "regression":
            true, pred, raw = np.concatenate(self.points, axis=1) if self.points else np.zeros((3, 0))
            return scatter_png(self.name, true, pred, raw, false_open=self.false_open if self.gated else 0,
                               title=self.title)
        classes = list(task.classes or []) if task.type == "multiclass" else ["false", "true"]
        if task.type == "multilabel":  # rows/columns: the tag sets that occur
            classes = sorted({c for pair in self.pairs for c in pair if c is not None and c != GATED})
        return confusion_png(self.name, classes, [], [], gated=self.gated, title=self.title, pairs=self.pairs)
