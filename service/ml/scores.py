"""Metric primitives in numpy (no spec knowledge): used by the head types and re-exported by metrics."""

from __future__ import annotations

import math

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(y_true) == 0:
        return None
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    """Unweighted mean F1 over the classes present in truth or predictions (scikit-learn's macro average)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return None
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = np.sum((y_true == c) & (y_pred == c))
        denom = np.sum(y_true == c) + np.sum(y_pred == c)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic (average ranks for ties)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    start = 0
    while start < len(s):  # average rank over runs of equal scores
        end = start
        while end + 1 < len(s) and sorted_s[end + 1] == sorted_s[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(y_true) == 0:
        return None
    d = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    return float(math.sqrt(np.mean(d * d)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(y_true) == 0:
        return None
    return float(np.mean(np.abs(np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64))))


def f1_micro_macro(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    """Multilabel F1 from (n, K) 0/1 truth and predictions: micro (pooled counts) and macro (mean over the tags
    present in truth or predictions, as scikit-learn with zero_division=0 over those tags)."""
    y, p = np.asarray(y).astype(bool), np.asarray(p).astype(bool)
    if len(y) == 0:
        return None, None
    tp, fp, fn = (y & p).sum(0), (~y & p).sum(0), (y & ~p).sum(0)
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / denom) if denom else 0.0
    per_denom = 2 * tp + fp + fn
    seen = per_denom > 0
    macro = float(np.mean(2 * tp[seen] / per_denom[seen])) if seen.any() else 0.0
    return micro, macro


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision (area under the step precision-recall curve, as scikit-learn); None without
    positives. Tied scores form one threshold."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y_sorted)[last]
    precision = tps / (last + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean over tags with at least one positive of their average precision."""
    aps = [average_precision(y[:, k], probs[:, k]) for k in range(y.shape[1])] if len(y) else []
    aps = [a for a in aps if a is not None]
    return float(np.mean(aps)) if aps else None
